"""`ferry.create_predictor(config)`: a loaded model with Paddle-style handles and a short `predict`."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from ferry.errors import ConfigError, InputError
from ferry.inference.backends import OpTime, Session, get_backend
from ferry.inference.backends import auto as auto_backend
from ferry.inference.config import Config
from ferry.inference.tensor import InputHandle, OutputHandle
from ferry.inference.validate import InputChecker

log = logging.getLogger("ferry")


def create_session(config: Config) -> Session:
    if config.backend != "auto":
        return get_backend(config.backend).create(config)
    table, reason = auto_backend.choose(config)
    if not table:
        log.info("backend auto: %s", reason)
        return get_backend(auto_backend.DEFAULT).create(config)
    sessions: dict[str, Session] = {}
    for name in sorted(set(table.values())):
        sessions[name] = get_backend(name).create(config)
    log.info("backend auto: %s", reason)
    if len(sessions) == 1:
        return next(iter(sessions.values()))
    by_batch = {b: sessions[name] for b, name in table.items()}
    return auto_backend.AutoSession(by_batch, config.package.signature.inputs[0].name, reason)


class Predictor:
    """Runs one model. `predict` is safe to call from many threads; the handles belong to one thread."""

    def __init__(self, config: Config, session: Session | None = None):
        self.config = config
        self._session = session if session is not None else create_session(config)
        sig = config.package.signature
        self._model = config.package.name
        self._checker = InputChecker(self._model, sig)
        self._output_names = sig.output_names
        self._inputs = {s.name: InputHandle(self._model, s, self._session.share) for s in sig.inputs}
        self._outputs = {s.name: OutputHandle(s) for s in sig.outputs}

    @property
    def backend(self) -> str:
        """What runs the model, e.g. 'onnxruntime 1.31.1 (CPUExecutionProvider)'."""
        return self._session.describe()

    def get_input_names(self) -> list[str]:
        return list(self._inputs)

    def get_output_names(self) -> list[str]:
        return list(self._output_names)

    def get_input_handle(self, name: str) -> InputHandle:
        try:
            return self._inputs[name]
        except KeyError:
            raise InputError(f"model {self._model!r} has no input {name!r}; inputs: {list(self._inputs)}") from None

    def get_output_handle(self, name: str) -> OutputHandle:
        try:
            return self._outputs[name]
        except KeyError:
            raise InputError(f"model {self._model!r} has no output {name!r}; outputs: {self._output_names}") from None

    def run(self) -> bool:
        """Run on what the input handles hold; results go to the output handles."""
        missing = [n for n, h in self._inputs.items() if h.array is None]
        if missing:
            raise InputError(f"model {self._model!r}: no data given for input(s) {missing}; use copy_from_cpu")
        self._checker.check({n: h.array for n, h in self._inputs.items()})
        results = self._session.run({n: h.value for n, h in self._inputs.items()}, self._output_names)
        for name, array in zip(self._output_names, results):
            self._outputs[name].array = array
        return True

    def predict(
        self,
        inputs: Mapping[str, np.ndarray] | np.ndarray,
        outputs: list[str] | None = None,
        *,
        validate: bool = True,
    ) -> dict[str, np.ndarray]:
        """`{input: array}` (or one array for a one-input model) in, `{output: array}` out.

        `validate=False` skips the input checks and their preparation, for callers that ran
        `check_inputs` already and pass what it returned (the server checks each request before it queues
        it, so a merged batch needs no second look).
        """
        if type(inputs) is not dict:
            if isinstance(inputs, Mapping):
                inputs = dict(inputs)
            elif len(self._inputs) == 1:
                inputs = {next(iter(self._inputs)): inputs}
            else:
                raise InputError(
                    f"model {self._model!r} takes {len(self._inputs)} inputs {list(self._inputs)}; "
                    "pass a dict of arrays"
                )
        if validate:
            inputs = self.check_inputs(inputs)
        names = self._output_names if outputs is None else self._check_outputs(outputs)
        return dict(zip(names, self._session.run(inputs, names)))

    def check_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The checks `predict` makes, alone: the server runs them per request before it merges requests
        into one batch, then calls `predict(..., validate=False)` on the batch. Returns the feeds as the
        engine takes them (numpy scalars as 0-d arrays, string bytes as text)."""
        inputs = self._checker.prepare(inputs)
        self._checker.check(inputs)
        return inputs

    def _check_outputs(self, outputs: list[str]) -> list[str]:
        unknown = [o for o in outputs if o not in self._outputs]
        if unknown:
            raise InputError(f"model {self._model!r} has no output(s) {unknown}; outputs: {self._output_names}")
        return list(outputs)

    def clone(self) -> Predictor:
        """A new predictor with its own handles that shares this one's loaded weights."""
        return Predictor(self.config, self._session.clone())

    def profile(self) -> list[OpTime]:
        """Per-op-type time over the runs so far (needs config.enable_profile())."""
        return self._session.profile()

    def profile_table(self) -> str:
        rows = self.profile()
        total = sum(r.total_ms for r in rows) or 1.0
        lines = [f"{'op':<28}{'calls':>8}{'total ms':>12}{'share':>8}"]
        lines += [f"{r.op_type:<28}{r.calls:>8}{r.total_ms:>12.3f}{r.total_ms / total:>8.1%}" for r in rows]
        return "\n".join(lines)


def create_predictor(config: Config) -> Predictor:
    return Predictor(config)


class PredictorPool:
    """`n` predictors sharing one model's weights; give each thread its own (`retrieve(i)`)."""

    def __init__(self, config: Config, size: int):
        if size < 1:
            raise ConfigError(f"PredictorPool size must be at least 1, got {size}")
        first = Predictor(config)
        self._predictors = [first] + [first.clone() for _ in range(size - 1)]

    def retrieve(self, index: int) -> Predictor:
        return self._predictors[index]

    retrive = retrieve  # Paddle 2.x spelling

    def __len__(self) -> int:
        return len(self._predictors)

    def __iter__(self) -> Any:
        return iter(self._predictors)
