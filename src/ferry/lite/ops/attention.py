"""Transformer building blocks that ONNX now has as single ops: Attention, RotaryEmbedding, SwiGLU,
LinearAttention and CausalConvWithState; and SoftmaxAttention, the lite engine's own fusion of the
decomposed form (see ferry/lite/fusion.py)."""

from __future__ import annotations

import math

import numpy as np

from ..registry import fills_out, op, slot
from .reduce import softmax_last


def _heads(x, n):
    b, s, _ = x.shape
    return x.reshape(b, s, n, -1).transpose(0, 2, 1, 3)


def _softmax_rows(scores, allowed):
    # Rows where every key is masked give zeros, not NaN.
    top = np.max(np.where(allowed, scores, -np.inf), axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0)
    e = np.where(allowed, np.exp(np.minimum(scores - top, 0)), 0)
    total = e.sum(axis=-1, keepdims=True)
    return np.where(total > 0, e / np.where(total > 0, total, 1), 0)


@op("Attention", since=23)
def Attention(q, k, v, attn_mask=None, past_key=None, past_value=None, nonpad_kv_seqlen=None, *, is_causal=0,
              kv_num_heads=None, q_num_heads=None, qk_matmul_output_mode=0, scale=None, softcap=0.0,
              softmax_precision=None, left_window_size=-1, right_window_size=-1):  # fmt: skip
    dtype = q.dtype
    packed = q.ndim == 3
    if packed:
        q, k, v = _heads(q, q_num_heads), _heads(k, kv_num_heads), _heads(v, kv_num_heads)
    past = 0
    if past_key is not None:
        past = past_key.shape[2]
        k, v = np.concatenate([past_key, k], axis=2), np.concatenate([past_value, v], axis=2)
    present_k, present_v = k, v
    group = q.shape[1] // k.shape[1]
    kk, vv = (np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)) if group > 1 else (k, v)
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    f64 = np.float64
    raw = np.matmul(q.astype(f64), np.swapaxes(kk.astype(f64), -1, -2)) * scale
    capped = softcap * np.tanh(raw / softcap) if softcap else raw
    sq, skv = raw.shape[-2:]
    allowed = np.ones((1, 1, sq, skv), bool)
    scores = capped
    if attn_mask is not None:
        mask = attn_mask
        if mask.shape[-1] < skv:  # a short mask is padded with "not allowed"
            width = [(0, 0)] * (mask.ndim - 1) + [(0, skv - mask.shape[-1])]
            mask = np.pad(mask, width, constant_values=False if mask.dtype == bool else -np.inf)
        if mask.dtype == bool:
            allowed = allowed & mask
        else:
            scores = scores + mask.astype(f64)
    offset = np.zeros((1, 1, 1, 1), np.int64) + past
    if nonpad_kv_seqlen is not None and past_key is None:
        lengths = nonpad_kv_seqlen.astype(np.int64).reshape(-1, 1, 1, 1)
        offset = lengths - sq
        allowed = allowed & (np.arange(skv).reshape(1, 1, 1, -1) < lengths)
    position = np.arange(sq).reshape(1, 1, -1, 1) + offset
    key = np.arange(skv).reshape(1, 1, 1, -1)
    if is_causal:
        allowed = allowed & (key <= position)
    if left_window_size >= 0:
        allowed = allowed & (key >= position - left_window_size)
    if right_window_size >= 0:
        allowed = allowed & (key <= position + right_window_size)
    biased = np.where(allowed, scores, -np.inf)
    probs = _softmax_rows(biased, allowed)
    y = np.matmul(probs, vv.astype(f64))
    if packed:
        y = y.transpose(0, 2, 1, 3).reshape(y.shape[0], sq, -1)
    qk = [raw, capped, biased, probs][qk_matmul_output_mode]
    return y.astype(dtype), present_k, present_v, qk.astype(dtype)


@op("RotaryEmbedding", since=23)
def RotaryEmbedding(x, cos_cache, sin_cache, position_ids=None, *, interleaved=0, num_heads=0,
                    rotary_embedding_dim=0):  # fmt: skip
    shape = x.shape
    # Work in (batch, seq, heads, head_size).
    h = x.transpose(0, 2, 1, 3) if x.ndim == 4 else x.reshape(shape[0], shape[1], num_heads, -1)
    dim = rotary_embedding_dim or h.shape[-1]
    rotate, keep = h[..., :dim], h[..., dim:]
    if position_ids is not None:
        cos_cache, sin_cache = cos_cache[position_ids], sin_cache[position_ids]
    cos, sin = cos_cache[:, :, None, :], sin_cache[:, :, None, :]
    if interleaved:
        x1, x2 = rotate[..., 0::2], rotate[..., 1::2]
    else:
        x1, x2 = rotate[..., : dim // 2], rotate[..., dim // 2 :]
    real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
    if interleaved:
        rotated = np.stack([real, imag], axis=-1).reshape(rotate.shape)
    else:
        rotated = np.concatenate([real, imag], axis=-1)
    out = np.concatenate([rotated, keep], axis=-1).astype(x.dtype)
    return out.transpose(0, 2, 1, 3) if x.ndim == 4 else out.reshape(shape)


@op("SwiGLU", since=28)
def SwiGLU(a, b, *, alpha=1.0):
    gate = a.astype(np.float64)
    return (gate / (1 + np.exp(-alpha * gate)) * b).astype(a.dtype)


@op("LinearAttention", since=27)
def LinearAttention(query, key, value, past_state=None, decay=None, beta=None, *, chunk_size=64, kv_num_heads,
                    q_num_heads, scale=0.0, update_rule="gated_delta"):  # fmt: skip
    f64 = np.float64
    q, k, v = (
        _heads(query.astype(f64), q_num_heads),
        _heads(key.astype(f64), kv_num_heads),
        _heads(value.astype(f64), kv_num_heads),
    )  # (B, H, T, d)
    b, hk, t, dk = k.shape
    dv = v.shape[-1]
    scale = scale or 1 / math.sqrt(query.shape[-1] / q_num_heads)
    state = np.zeros((b, hk, dk, dv)) if past_state is None else past_state.astype(f64)

    def per_step(x, width):  # (B, T, H*width or H) -> (B, H, T, width or 1)
        if x is None:
            return None
        x = x.astype(f64)
        return (
            x.reshape(b, t, hk, -1).transpose(0, 2, 1, 3)
            if x.shape[-1] != 1
            else np.broadcast_to(x.reshape(b, 1, t, 1), (b, hk, t, 1))
        )

    g, beta_ = per_step(decay, dk), per_step(beta, 1)
    group = q_num_heads // kv_num_heads
    out = np.zeros((b, q_num_heads, t, dv))
    for step in range(t):
        kt, vt = k[:, :, step], v[:, :, step]  # (B, Hk, d)
        gate = np.exp(g[:, :, step])[..., None] if g is not None else 1.0  # (B, Hk, dk or 1, 1)
        if update_rule in ("gated", "gated_delta"):
            state = gate * state
        if update_rule in ("delta", "gated_delta"):
            predicted = np.einsum("bhkv,bhk->bhv", state, kt)
            state = state + beta_[:, :, step][..., None] * np.einsum("bhk,bhv->bhkv", kt, vt - predicted)
        else:
            state = state + np.einsum("bhk,bhv->bhkv", kt, vt)
        shared = np.repeat(state, group, axis=1) if group > 1 else state
        out[:, :, step] = scale * np.einsum("bhk,bhkv->bhv", q[:, :, step], shared)
    y = out.transpose(0, 2, 1, 3).reshape(b, t, -1)
    return y.astype(query.dtype), state.astype(query.dtype)


@op("CausalConvWithState", since=27)
def CausalConvWithState(x, weight, bias=None, past_state=None, *, activation="none"):
    b, c, length = x.shape
    k = weight.shape[-1]
    past = np.zeros((b, c, k - 1), x.dtype) if past_state is None else past_state
    full = np.concatenate([past, x], axis=-1).astype(np.float64)
    w = weight.reshape(c, k).astype(np.float64)
    y = sum(full[:, :, i : i + length] * w[None, :, i : i + 1] for i in range(k))
    if bias is not None:
        y = y + bias.reshape(1, c, 1)
    if activation in ("silu", "swish"):
        y = y / (1 + np.exp(-y))
    present = full[:, :, full.shape[-1] - (k - 1) :] if k > 1 else np.zeros((b, c, 0))
    return y.astype(x.dtype), present.astype(x.dtype)


@op("SoftmaxAttention", domain="ai.ferry.lite")
@fills_out
def SoftmaxAttention(a, b, v, bias=None, *, scale=1.0, nan_to_zero=0, a_perm=None, b_perm=None, v_perm=None,
                     out=None):  # fmt: skip
    """softmax(a @ b * scale + bias) @ v over the last axis, NaN probabilities (rows with every key masked)
    set to 0 when `nan_to_zero`: what fusion.fuse_attention replaces. `*_perm`: the operand's transpose,
    taken as a view (the heads split out of (batch, sequence, heads, d)). One batch entry at a time, so that
    its scores stay in cache for the mask, the softmax and the product."""
    a, b, v = (x if perm is None else x.transpose(perm) for x, perm in ((a, a_perm), (b, b_perm), (v, v_perm)))
    lead = a.ndim >= 3 and a.ndim == b.ndim == v.ndim and a.shape[0] == b.shape[0] == v.shape[0]
    scores_shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1])
    if bias is not None and (bias.ndim > len(scores_shape) or np.broadcast_shapes(bias.shape, scores_shape) !=
                             scores_shape):  # fmt: skip
        lead = False  # a bias larger than the scores: broadcast the whole thing at once
    if not lead:
        return _attend(a, b, v, bias, scale, nan_to_zero)
    shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2], v.shape[:-2]) + (a.shape[-2], v.shape[-1])
    dtype = np.result_type(a, b, v)
    y = slot(out, shape, dtype)
    y = np.empty(shape, dtype) if y is None else y
    per_entry = bias is not None and bias.ndim == len(scores_shape)
    for i in range(a.shape[0]):
        mask = None if bias is None else bias[i if bias.shape[0] > 1 else 0] if per_entry else bias
        y[i] = _attend(a[i], b[i], v[i], mask, scale, nan_to_zero)
    return y


@np.errstate(invalid="ignore")  # a row with every key masked is NaN by definition, not by accident
def _attend(a, b, v, bias, scale, nan_to_zero):
    if scale != 1.0:
        a = a * np.asarray(scale, a.dtype)  # queries x d: smaller than the scores
    scores = np.matmul(a, b)
    if bias is not None:
        scores = np.add(scores, bias, out=scores) if np.broadcast_shapes(scores.shape, bias.shape) == scores.shape \
            else scores + bias  # fmt: skip
    top = softmax_last(scores, scores)
    # NaN only where a row's maximum is not finite (every key masked, or inf/NaN scores): check the column.
    if nan_to_zero and not np.isfinite(top).all():
        np.copyto(scores, 0, where=np.isnan(scores))
    return np.matmul(scores, v)
