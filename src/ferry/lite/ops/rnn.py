"""Recurrent ops: RNN, GRU, LSTM, unrolled over time with numpy matmuls."""

from __future__ import annotations

import numpy as np

from ..registry import op

_ACT = {
    "Tanh": np.tanh,
    "Relu": lambda x: np.maximum(x, 0),
    "Sigmoid": lambda x: 1 / (1 + np.exp(-x)),
}


def _dirs(direction):
    return {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[direction]


def _run(x, layout, direction, hidden, initial, cell, n_state):
    """Shared time loop: returns (Y, final states...) in ONNX's layouts."""
    if layout:
        x = x.transpose(1, 0, 2)
        initial = [None if s is None else s.transpose(1, 0, 2) for s in initial]
    seq, batch = x.shape[:2]
    ys, finals = [], [[] for _ in range(n_state)]
    for d, reverse in enumerate(_dirs(direction)):
        state = [np.zeros((batch, hidden), x.dtype) if s is None else s[d] for s in initial]
        outs = [None] * seq
        for t in range(seq - 1, -1, -1) if reverse else range(seq):
            state = cell(d, x[t], state)
            outs[t] = state[0]
        ys.append(np.stack(outs))
        for acc, s in zip(finals, state):
            acc.append(s)
    y = np.stack(ys, axis=1)  # (seq, dirs, batch, hidden)
    finals = [np.stack(f) for f in finals]
    if layout:
        y = y.transpose(2, 0, 1, 3)
        finals = [f.transpose(1, 0, 2) for f in finals]
    return (y.astype(x.dtype), *[f.astype(x.dtype) for f in finals])


def _acts(activations, default):
    names = activations or default
    return [_ACT[a] for a in names]


@op("RNN")
def RNN(x, w, r, b=None, sequence_lens=None, initial_h=None, *, activations=None, direction="forward",
        hidden_size, layout=0, activation_alpha=None, activation_beta=None, clip=None):  # fmt: skip
    acts = _acts(activations, ["Tanh"] * len(_dirs(direction)))
    b = np.zeros((w.shape[0], 2 * hidden_size), x.dtype) if b is None else b

    def cell(d, xt, state):
        h = acts[d](xt @ w[d].T + state[0] @ r[d].T + b[d, :hidden_size] + b[d, hidden_size:])
        return [h]

    return _run(x, layout, direction, hidden_size, [initial_h], cell, 1)


@op("GRU")
def GRU(x, w, r, b=None, sequence_lens=None, initial_h=None, *, activations=None, direction="forward",
        hidden_size, layout=0, linear_before_reset=0, activation_alpha=None, activation_beta=None,
        clip=None):  # fmt: skip
    acts = _acts(activations, ["Sigmoid", "Tanh"] * len(_dirs(direction)))
    hs = hidden_size
    b = np.zeros((w.shape[0], 6 * hs), x.dtype) if b is None else b

    def cell(d, xt, state):
        f, g = acts[2 * d], acts[2 * d + 1]
        h = state[0]
        wz, wr, wh = np.split(w[d], 3)
        rz, rr, rh = np.split(r[d], 3)
        wbz, wbr, wbh, rbz, rbr, rbh = np.split(b[d], 6)
        z = f(xt @ wz.T + h @ rz.T + wbz + rbz)
        rt = f(xt @ wr.T + h @ rr.T + wbr + rbr)
        if linear_before_reset:
            hh = g(xt @ wh.T + rt * (h @ rh.T + rbh) + wbh)
        else:
            hh = g(xt @ wh.T + (rt * h) @ rh.T + rbh + wbh)
        return [(1 - z) * hh + z * h]

    return _run(x, layout, direction, hs, [initial_h], cell, 1)


@op("LSTM")
def LSTM(x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None, *, activations=None,
         direction="forward", hidden_size, layout=0, input_forget=0, activation_alpha=None, activation_beta=None,
         clip=None):  # fmt: skip
    acts = _acts(activations, ["Sigmoid", "Tanh", "Tanh"] * len(_dirs(direction)))
    hs = hidden_size
    b = np.zeros((w.shape[0], 8 * hs), x.dtype) if b is None else b
    p = np.zeros((w.shape[0], 3 * hs), x.dtype) if p is None else p

    def cell(d, xt, state):
        f, g, h_act = acts[3 * d : 3 * d + 3]
        h, c = state
        gates = xt @ w[d].T + h @ r[d].T + b[d, : 4 * hs] + b[d, 4 * hs :]
        i, o, fg, cc = np.split(gates, 4, axis=-1)
        pi, po, pf = np.split(p[d], 3)
        i = f(i + pi * c)
        fg = f(fg + pf * c)
        cc = g(cc)
        c = fg * c + i * cc
        o = f(o + po * c)
        return [o * h_act(c), c]

    y, h, c = _run(x, layout, direction, hs, [initial_h, initial_c], cell, 2)
    return y, h, c
