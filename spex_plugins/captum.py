"""Captum adapter: SPEX as a Captum perturbation attribution, and in Captum's LLM workflow.

- :class:`Spex` (a ``captum.attr.PerturbationAttribution``): ``attribute(inputs, baselines,
  target, additional_forward_args, feature_mask, n_samples, perturbations_per_eval, ...)``
  with Captum's conventions; Shapley (default) or Banzhaf values broadcast over each
  feature-mask group, and ``attribute_interactions(...)`` for the full sparse spectrum.
- :class:`SpexLLMAttribution` (a ``captum.attr.LLMAttribution`` that accepts :class:`Spex`):
  attributes a target continuation to the features of a ``TextTokenInput`` /
  ``TextTemplateInput``, evaluating the perturbed prompts in batches (one teacher-forced
  forward pass per batch), and returns a :class:`SpexLLMAttributionResult`, Captum's
  ``LLMAttributionResult`` plus the ``explanation`` (interactions).

torch and captum are imported with this module (``pip install 'spex-plugins[captum]'``);
``import spex_plugins`` itself needs neither.

>>> import torch
>>> from spex_plugins.captum import Spex
>>> def model(x):  # one output per example
...     return x[:, 0] * x[:, 1] + x[:, 2]
>>> attributions = Spex(model, random_state=0).attribute(torch.ones(1, 3))
>>> [round(v, 6) for v in attributions[0].tolist()]
[0.5, 0.5, 1.0]
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

try:
    import torch
    from captum._utils.common import (
        _expand_additional_forward_args,
        _expand_target,
        _format_additional_forward_args,
        _format_output,
        _format_tensor_into_tuples,
        _is_tuple,
        _run_forward,
    )
    from captum.attr import (
        LLMAttribution,
        LLMAttributionResult,
        PerturbationAttribution,
        TextTemplateInput,
        TextTokenInput,
    )
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("spex_plugins.captum needs torch and captum: "
                      "pip install 'spex-plugins[captum]'") from error

from .core import SPEX, FourierExplanation
from .core.settings import engine, resolve_budget

__all__ = ["Spex", "SpexLLMAttribution", "SpexLLMAttributionResult"]

Index = Literal["shapley", "banzhaf"]
INDICES = ("shapley", "banzhaf")
TargetType = str | torch.Tensor | Sequence[int] | None


def _check_budget_type(n_samples) -> None:
    if n_samples is not None and (isinstance(n_samples, bool)
                                  or not isinstance(n_samples, int | np.integer)):
        raise ValueError(f"n_samples must be an integer or None, got {n_samples!r}")


def _check_per_eval(perturbations_per_eval) -> None:
    if (isinstance(perturbations_per_eval, bool)
            or not isinstance(perturbations_per_eval, int | np.integer)
            or perturbations_per_eval < 1):
        raise ValueError(
            f"perturbations_per_eval must be an integer >= 1, got {perturbations_per_eval!r}")


def _explain(spex: SPEX, value_function: Callable[[np.ndarray], np.ndarray], n: int,
             n_samples: int | None, batch_size: int, progress: bool) -> FourierExplanation:
    """The core explanation of ``value_function`` over ``n`` players; ``n_samples`` None means
    the default budget (see :func:`spex_plugins.core.settings.resolve_budget`)."""
    _check_budget_type(n_samples)
    budget = resolve_budget(spex, n, None if n_samples is None else int(n_samples))
    with torch.no_grad():
        return spex.explain(value_function, n, budget, batch_size=int(batch_size),
                            progress=progress, budget_name="n_samples")


# --------------------------------------------------------------------------------------------
# Tensor inputs
# --------------------------------------------------------------------------------------------


class Spex(PerturbationAttribution):
    """SPEX (Kang et al., ICML 2025) as a Captum perturbation attribution.

    ``Spex(forward_func, *, spex=None, max_players=4096, **spex_options)``: the engine is
    ``spex`` (a :class:`spex_plugins.SPEX`) or built from its keyword names (``max_order``,
    ``n_groups``, ``b``, ``decoder``, ``refit``, ``random_state``, ``chase_depth``, ...), which
    may also override ``spex``'s settings; ``max_players`` is the largest number of players
    accepted. The degree bound above the number of players is lowered by the core.

    ``attribute(...)`` returns Shapley (or Banzhaf) values shaped like the inputs, as
    ``KernelShap`` does; ``attribute_interactions(...)`` returns the sparse spectrum of each
    example as a :class:`spex_plugins.FourierExplanation`.
    """

    def __init__(self, forward_func: Callable, *, spex: SPEX | None = None,
                 max_players: int = 4096, **spex_options: Any) -> None:
        super().__init__(forward_func)
        self.spex = engine(spex, **spex_options)
        self.max_players = max_players

    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None,
                  feature_mask=None, n_samples: int | None = None,
                  perturbations_per_eval: int = 1, show_progress: bool = False,
                  index: Index = "shapley", return_input_shape: bool = True):
        """Shapley (or Banzhaf) values of each feature-mask group, Captum style.

        Arguments follow ``captum.attr.KernelShap.attribute``:

        - ``inputs``: a tensor or tuple of tensors, dimension 0 = examples.
        - ``baselines``: None (zeros), a scalar, or a tensor (or tuple of them) broadcastable to
          each input; a player's elements take the baseline value when the player is absent.
        - ``target``, ``additional_forward_args``: as everywhere in Captum.
        - ``feature_mask``: integer tensor(s) broadcastable to the inputs, ids 0..n-1 without
          gaps, grouping elements (across tensors too) into n players. Default: every scalar
          of one example is a player (at most ``max_players`` of them).
        - ``n_samples``: the SPEX budget (distinct perturbations, shared by all examples);
          None: all 2^n perturbations for up to 9 players, else about 1,000 (at least the
          engine's minimum, see :func:`spex_plugins.core.settings.default_budget`). A budget
          below the minimum raises a ValueError that states it.
        - ``perturbations_per_eval``: perturbations per forward call; each call holds
          ``perturbations_per_eval * batch size`` rows. Results do not depend on it.
        - ``show_progress``: a progress bar over the model calls (total and ETA from the start).
        - ``index``: "shapley" or "banzhaf".
        - ``return_input_shape``: False returns the per-player values, (examples, n).

        When ``forward_func`` returns one scalar per example, each example gets its own
        explanation: all examples share the masks (each forward call covers all of them), and
        each is fitted on its own, so an example's attributions are the same alone or in a
        batch. When it returns one scalar for the whole batch, the batch is explained as one
        and the attributions have first dimension 1. Returns tensor(s) shaped like ``inputs``.
        """
        if index not in INDICES:
            raise ValueError(f"index must be one of {INDICES}, got {index!r}")
        problem = self._problem(inputs, baselines, target, additional_forward_args,
                                feature_mask, perturbations_per_eval)
        explanation = self._explain(problem, n_samples, perturbations_per_eval, show_progress)
        values = (explanation.shapley_values() if index == "shapley"
                  else explanation.banzhaf_values())  # (n, K)
        return problem.attributions(values, return_input_shape)

    def attribute_interactions(self, inputs, baselines=None, target=None,
                               additional_forward_args=None, feature_mask=None,
                               n_samples: int | None = None, perturbations_per_eval: int = 1,
                               show_progress: bool = False) -> list[FourierExplanation]:
        """The sparse Fourier explanation of each example (arguments as in :meth:`attribute`).

        Returns a list with one :class:`~spex_plugins.FourierExplanation` per example (one
        for the whole batch when ``forward_func`` returns one scalar per batch); its players
        are the feature-mask groups, so ``.interactions("FSII", 2)``, ``.top(10)``,
        ``.moebius()`` and the other conversions read off any interaction index.
        """
        problem = self._problem(inputs, baselines, target, additional_forward_args,
                                feature_mask, perturbations_per_eval)
        explanation = self._explain(problem, n_samples, perturbations_per_eval, show_progress)
        return [explanation.output(k) for k in range(explanation.n_outputs)]

    def _problem(self, inputs, baselines, target, additional_forward_args, feature_mask,
                 perturbations_per_eval):
        _check_per_eval(perturbations_per_eval)
        problem = _MaskedProblem(self.forward_func, inputs, baselines, target,
                                 additional_forward_args, feature_mask, self.max_players)
        if problem.aggregate and perturbations_per_eval != 1:
            raise ValueError(
                "perturbations_per_eval must be 1 when forward_func returns one scalar for the "
                "whole batch (as in Captum)")
        return problem

    def _explain(self, problem, n_samples, perturbations_per_eval, show_progress):
        explanation = _explain(self.spex, problem.value_function, problem.n_players, n_samples,
                               perturbations_per_eval, show_progress)
        explanation.metadata["captum_method"] = type(self).__name__
        return explanation


class _MaskedProblem:
    """Captum-formatted inputs, baselines, target, extra arguments and players.

    ``value_function(masks (m, n) bool) -> (m, K)``: K = batch size (one output per example)
    or 1 (``aggregate``: forward_func returns one scalar per batch).
    """

    def __init__(self, forward_func, inputs, baselines, target, additional_forward_args,
                 feature_mask, max_players: int):
        self.forward_func = forward_func
        self.is_tuple = _is_tuple(inputs)
        if not self.is_tuple and not isinstance(inputs, torch.Tensor):
            raise TypeError(f"inputs must be a tensor or a tuple of tensors, got {type(inputs)}")
        self.inputs = _format_tensor_into_tuples(inputs)
        if not self.inputs or not all(isinstance(x, torch.Tensor) for x in self.inputs):
            raise TypeError("inputs must be a tensor or a non-empty tuple of tensors")
        sizes = {x.shape[0] if x.dim() else None for x in self.inputs}
        if len(sizes) != 1 or None in sizes:
            raise ValueError("all inputs need a batch dimension 0 of the same size, got shapes "
                             f"{[tuple(x.shape) for x in self.inputs]}")
        self.batch_size = int(sizes.pop())
        self.device = self.inputs[0].device
        self.baselines = _format_baselines(baselines, self.inputs)
        self.target = target
        self.args = _format_additional_forward_args(additional_forward_args)
        self.masks, self.n_players = _format_feature_mask(feature_mask, self.inputs, max_players)

        with torch.no_grad():
            initial = _run_forward(forward_func, self.inputs, target, self.args)
        if not isinstance(initial, torch.Tensor):
            initial = torch.as_tensor(initial)
        if initial.numel() == self.batch_size:
            self.aggregate = False
        elif initial.numel() == 1:
            self.aggregate = True
            for j, mask in enumerate(self.masks):
                if mask.dim() == self.inputs[j].dim() and mask.shape[0] != 1:
                    raise ValueError(
                        "forward_func returns one scalar for the whole batch, so the batch is "
                        "explained as one and feature_mask cannot differ between examples "
                        f"(feature_mask[{j}] has first dimension {mask.shape[0]}, needs 1)")
        else:
            raise ValueError(
                f"forward_func (with target={target!r}) returned shape {tuple(initial.shape)} "
                f"for {self.batch_size} example(s); it must return one scalar per example "
                "(pick one output with target) or one scalar for the whole batch")

    @property
    def n_outputs(self) -> int:
        return 1 if self.aggregate else self.batch_size

    def perturbed(self, keep) -> tuple:
        """Inputs for a bool (m, n) tensor of kept players: rows (m * batch), mask-major."""

        out = []
        for x, base, mask in zip(self.inputs, self.baselines, self.masks, strict=True):
            # keep[:, mask] -> (m, *mask.shape); lift to (m, 1.., *mask.shape) to broadcast
            kept = keep[:, mask]
            kept = kept.reshape(len(keep), *([1] * (x.dim() - mask.dim())), *mask.shape)
            rows = torch.where(kept, x.unsqueeze(0), base.unsqueeze(0))
            out.append(rows.reshape(-1, *x.shape[1:]))
        return tuple(out)

    def value_function(self, masks: np.ndarray) -> np.ndarray:
        m = len(masks)
        keep = torch.from_numpy(np.ascontiguousarray(masks, dtype=bool)).to(self.device)
        if self.aggregate:
            outputs = [_run_forward(self.forward_func, self.perturbed(keep[i:i + 1]),
                                         self.target, self.args) for i in range(m)]
            values = torch.stack([torch.as_tensor(o).reshape(-1) for o in outputs])
        else:
            target = _expand_target(self.target, m)
            args = _expand_additional_forward_args(self.args, m)
            values = _run_forward(self.forward_func, self.perturbed(keep), target, args)
            values = torch.as_tensor(values)
        expected = m * self.n_outputs
        if values.numel() != expected:
            raise ValueError(
                f"forward_func returned shape {tuple(values.shape)} for {expected} perturbed "
                f"example(s) ({m} perturbation(s) x {self.n_outputs}); it must return one "
                "scalar per example")
        values = values.detach().to("cpu", torch.float64).reshape(m, self.n_outputs).numpy()
        bad = ~np.isfinite(values)
        if bad.any():
            row, example = np.argwhere(bad)[0]
            absent = np.flatnonzero(~masks[row]).tolist()
            raise ValueError(
                f"forward_func returned non-finite outputs (NaN or inf) for {int(bad.sum())} of "
                f"{values.size} perturbed example(s); first: example {example} with players "
                f"{absent[:12]}{' ...' if len(absent) > 12 else ''} absent gave "
                f"{values[row, example]}")
        return values

    def attributions(self, values: np.ndarray, return_input_shape: bool):
        """Per-player values (n, K) -> Captum-shaped attributions (group value broadcast)."""
        per_player = torch.as_tensor(np.asarray(values).reshape(self.n_players, -1).T)  # (K, n)
        if not return_input_shape:
            return per_player.to(self._dtype(self.inputs[0]))
        out = []
        for x, mask in zip(self.inputs, self.masks, strict=True):
            shape = (self.n_outputs, *x.shape[1:])
            full = mask.broadcast_to((self.batch_size, *x.shape[1:]) if mask.dim() == x.dim()
                                     else x.shape[1:]).reshape(-1, math.prod(x.shape[1:]))
            index = full[: self.n_outputs].to("cpu").expand(self.n_outputs, -1)
            out.append(torch.gather(per_player, 1, index).reshape(shape)
                       .to(device=x.device, dtype=self._dtype(x)))
        return _format_output(self.is_tuple, tuple(out))

    @staticmethod
    def _dtype(x):
        return x.dtype if x.is_floating_point() else torch.float32


def _format_baselines(baselines, inputs: tuple) -> tuple:
    """Baselines as one tensor per input, broadcast to its shape (Captum's accepted forms)."""

    if baselines is None:
        baselines = (0,) * len(inputs)
    elif not isinstance(baselines, tuple):
        baselines = (baselines,)
    if len(baselines) != len(inputs):
        raise ValueError(f"got {len(baselines)} baselines for {len(inputs)} inputs")
    out = []
    for j, (base, x) in enumerate(zip(baselines, inputs, strict=True)):
        if not isinstance(base, torch.Tensor | int | float):
            raise TypeError(f"baselines[{j}] must be a tensor or a number, got {type(base)}")
        base = torch.as_tensor(base, dtype=x.dtype, device=x.device)
        try:
            out.append(base.broadcast_to(x.shape))
        except RuntimeError as error:
            raise ValueError(f"baselines[{j}] of shape {tuple(base.shape)} does not broadcast "
                             f"to input {j} of shape {tuple(x.shape)}") from error
    return tuple(out)


def _format_feature_mask(feature_mask, inputs: tuple, max_players: int) -> tuple[tuple, int]:
    """Validated feature masks (long tensors) and the number of players n.

    Ids must be integers 0..n-1 with none missing, each mask broadcastable to its input (a
    leading dimension of 1 or the batch size when it has the input's rank).
    """

    if feature_mask is None:
        n = sum(math.prod(x.shape[1:]) for x in inputs)
        if n > max_players:
            raise ValueError(
                f"without a feature_mask every scalar of an example is a player: n={n} players "
                f"exceeds max_players={max_players}. Pass a feature_mask that groups elements "
                "(e.g. superpixels, words) into fewer players, or raise max_players")
        masks, start = [], 0
        for x in inputs:
            size = math.prod(x.shape[1:])
            masks.append(torch.arange(start, start + size, device=x.device)
                         .reshape(1, *x.shape[1:]))
            start += size
        return tuple(masks), n

    masks = feature_mask if isinstance(feature_mask, tuple) else (feature_mask,)
    if len(masks) != len(inputs):
        raise ValueError(f"feature_mask has {len(masks)} tensor(s) for {len(inputs)} input(s)")
    checked = []
    for j, (mask, x) in enumerate(zip(masks, inputs, strict=True)):
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"feature_mask[{j}] must be a tensor, got {type(mask)}")
        if mask.is_floating_point() or mask.is_complex() or mask.dtype == torch.bool:
            raise ValueError(f"feature_mask[{j}] must hold integer ids, got dtype {mask.dtype}")
        fits = mask.dim() <= x.dim() and all(
            m in (1, s) for m, s in zip(mask.shape[::-1], x.shape[::-1], strict=False))
        if not fits:
            raise ValueError(
                f"feature_mask[{j}] of shape {tuple(mask.shape)} does not broadcast to input "
                f"{j} of shape {tuple(x.shape)} (each dimension must be 1 or match)")
        checked.append(mask.to(device=x.device, dtype=torch.long))
    ids = torch.unique(torch.cat([m.reshape(-1).cpu() for m in checked]))
    if len(ids) == 0:
        raise ValueError("feature_mask is empty")
    if ids[0] < 0:
        raise ValueError(f"feature_mask ids must be >= 0, got {int(ids[0])}")
    n = int(ids[-1]) + 1
    if len(ids) != n:
        missing = np.setdiff1d(np.arange(n), ids.numpy())
        raise ValueError(
            f"feature_mask ids must be 0..n-1 without gaps; ids {missing[:12].tolist()}"
            f"{' ...' if len(missing) > 12 else ''} are missing below the largest id {n - 1}")
    if n > max_players:
        raise ValueError(f"feature_mask defines n={n} players, above max_players={max_players};"
                         " group elements into fewer players or raise max_players")
    return tuple(checked), n


# --------------------------------------------------------------------------------------------
# LLM attribution
# --------------------------------------------------------------------------------------------


class SpexLLMAttributionResult(LLMAttributionResult):
    """Captum's ``LLMAttributionResult`` plus the SPEX ``explanation``.

    ``explanation`` is a :class:`spex_plugins.FourierExplanation` over the interpretable
    features (``metadata["feature_names"]``); output 0 is the whole target, output 1 + j target
    token j. :meth:`interactions` reads it with (position, feature text) keys.
    """

    def __init__(self, *, explanation: FourierExplanation, **fields: Any) -> None:
        super().__init__(**fields)
        self.explanation = explanation

    def interactions(self, index: str = "FSII", order: int = 2,
                     output: int = 0) -> dict[tuple[tuple[int, str], ...], float]:
        """Interactions among input features, keyed by tuples of (position, feature text).

        Positions keep repeated words apart (two " taller" features are two keys), as
        Captum's own attributions are positional. ``output`` 0 is the whole target sequence,
        1 + j its token j; ``index`` and ``order`` as in
        :meth:`spex_plugins.FourierExplanation.interactions`.
        """
        names = self.explanation.metadata["feature_names"]
        values = self.explanation.output(output).interactions(index, order)
        return {tuple((i, names[i]) for i in key): v for key, v in values.items()}


class SpexLLMAttribution(LLMAttribution):
    """Captum's ``LLMAttribution`` with SPEX, evaluating perturbed prompts in batches.

    ``SpexLLMAttribution(Spex(model, random_state=0), tokenizer, attr_target="log_prob")``, as
    ``LLMAttribution(FeatureAblation(model), tokenizer)`` (a bare model gets ``Spex(model)``).
    :meth:`attribute` takes a ``TextTokenInput`` / ``TextTemplateInput``, scores the target by
    teacher forcing (whole target per forward pass, ``perturbations_per_eval`` prompts per
    pass) and returns a :class:`SpexLLMAttributionResult`, so ``plot_token_attr`` and
    ``plot_seq_attr`` work as with Captum's methods.
    """

    SUPPORTED_METHODS = (Spex,)
    SUPPORTED_PER_TOKEN_ATTR_METHODS = (Spex,)
    SUPPORTED_INPUTS = (TextTemplateInput, TextTokenInput)

    def __init__(self, attr_method: Spex | torch.nn.Module, tokenizer,
                 attr_target: Literal["log_prob", "prob"] = "log_prob") -> None:
        if not isinstance(attr_method, Spex):
            if not isinstance(attr_method, torch.nn.Module):
                raise TypeError(
                    "SpexLLMAttribution takes a Spex attribution built on a causal LM "
                    "(Spex(model, ...)) or the causal LM itself, got "
                    f"{type(attr_method).__name__}; Captum's own methods go to LLMAttribution")
            attr_method = Spex(attr_method)
        if attr_target not in ("log_prob", "prob"):
            raise ValueError(f"attr_target must be 'log_prob' or 'prob', got {attr_target!r}")
        super().__init__(attr_method, tokenizer, attr_target=attr_target)

    def attribute(self, inp, target: TargetType = None, num_trials: int = 1,
                  gen_args: dict | None = None, use_cached_outputs: bool = True,
                  _inspect_forward: Callable | None = None, forward_in_tokens: bool = True, *,
                  n_samples: int | None = None, perturbations_per_eval: int = 16,
                  show_progress: bool = False, index: Index = "shapley"
                  ) -> SpexLLMAttributionResult:
        """Attribute the target's log-probability to the features of ``inp``.

        ``inp``: a ``TextTokenInput`` or ``TextTemplateInput``; ``target``: a string, token ids
        (a 1-D tensor or a list of ints), or None (the model's greedy continuation, generated
        once with ``gen_args``). Each perturbed prompt is the prompt Captum's
        ``LLMAttribution`` builds; ``perturbations_per_eval`` of them share one teacher-forced
        forward pass (padded, attention-masked) that scores every target token. ``n_samples``
        is the SPEX budget (None: about 1,000 prompts, all 2^n for up to 9 features; see
        :func:`spex_plugins.core.settings.default_budget`); ``show_progress`` shows the prompts
        to go and the ETA. ``num_trials`` must be 1: a SPEX design is fixed by the ``Spex``
        ``random_state``.

        Drop-in arguments of Captum's ``LLMAttribution.attribute`` that do not change SPEX's
        scoring are accepted and not used: ``use_cached_outputs`` (every prompt is scored by
        one teacher-forced pass over prompt + target, never token by token),
        ``forward_in_tokens`` (prompts are always built and scored as token ids) and
        ``_inspect_forward``.

        Returns a :class:`SpexLLMAttributionResult`: ``seq_attr`` (features,) for the whole
        target, ``token_attr`` (target tokens, features), ``output_probs`` of the target
        tokens given the full prompt, and ``explanation``, the Fourier explanation with output
        0 = the whole target and output 1 + j = target token j.
        """
        if index not in INDICES:
            raise ValueError(f"index must be one of {INDICES}, got {index!r}")
        if num_trials != 1:
            raise ValueError("num_trials must be 1 with SPEX: its design is fixed by "
                             "Spex(random_state=...); raise n_samples for more precision")
        if not isinstance(inp, self.SUPPORTED_INPUTS):
            supported = ", ".join(c.__name__ for c in self.SUPPORTED_INPUTS)
            raise TypeError(f"SpexLLMAttribution supports {supported} inputs, got "
                            f"{type(inp).__name__}")
        _check_per_eval(perturbations_per_eval)
        if isinstance(target, list | tuple | np.ndarray):
            if not all(isinstance(t, int | np.integer) for t in target):
                raise TypeError("a target given as a sequence must hold token ids (ints)")
            target = torch.as_tensor(np.asarray(target, dtype=np.int64))
        target_tokens = torch.as_tensor(self._get_target_tokens(inp, target, gen_args=gen_args),
                                        dtype=torch.long).reshape(-1).cpu()
        if len(target_tokens) == 0:
            raise ValueError("the target is empty: nothing to attribute")
        n = inp.n_itp_features

        def value_function(masks: np.ndarray) -> np.ndarray:
            return self._log_probs(inp, masks, target_tokens, perturbations_per_eval)

        explanation = _explain(self.attr_method.spex, value_function, n, n_samples,
                               perturbations_per_eval, show_progress)
        full = self._log_probs(inp, np.ones((1, n), bool), target_tokens, 1)[0, 1:]
        output_tokens = self._pretty_tokens(target_tokens)
        explanation.metadata.update(
            captum_method=type(self).__name__, attr_target=self.attr_target,
            feature_names=_feature_names(inp), output_names=["<sequence>", *output_tokens],
            target_ids=target_tokens.tolist())
        values = (explanation.shapley_values() if index == "shapley"
                  else explanation.banzhaf_values())  # (n, 1 + T)
        attr = inp.format_attr(torch.as_tensor(values.T, dtype=torch.float32))
        fields = dict(seq_attr=attr[0], token_attr=attr[1:], input_tokens=list(inp.values),
                      output_tokens=output_tokens, inp=inp,
                      output_probs=torch.as_tensor(full if self.attr_target == "prob"
                                                   else np.exp(full), dtype=torch.float32))
        return SpexLLMAttributionResult(
            explanation=explanation, **{k: v for k, v in fields.items() if k in _result_fields()})

    def _prompts(self, inp, masks: np.ndarray) -> list:
        """The perturbed prompts (1-D token id tensors) Captum's LLMAttribution would run."""
        keep = torch.from_numpy(np.ascontiguousarray(masks, dtype=bool)).long()
        if isinstance(inp, TextTokenInput):  # builds all perturbed prompts from a (m, n) mask
            return list(inp.to_model_input(keep).cpu())
        prompts = []
        for row in keep:
            ids = self._format_model_input(inp.to_model_input(row[None]))["input_ids"]
            prompts.append(ids.reshape(-1).cpu())
        return prompts

    def _log_probs(self, inp, masks: np.ndarray, target_tokens, batch_size: int) -> np.ndarray:
        """(m, 1 + T): the target's total log-probability (or probability), then per token."""
        from .models.llm import teacher_forced_log_probs

        per_token = teacher_forced_log_probs(
            self.model, self._prompts(inp, masks), target_tokens, batch_size=batch_size,
            pad_token_id=getattr(self.tokenizer, "pad_token_id", None), per_token=True)
        values = torch.cat([per_token.sum(1, keepdim=True), per_token], dim=1).numpy()
        return np.exp(values) if self.attr_target == "prob" else values

    def _pretty_tokens(self, target_tokens) -> list[str]:
        """Target token labels as Captum makes them (raw tokens where its helper fails)."""
        from captum.attr._core import llm_attr

        pretty = getattr(llm_attr, "_convert_ids_to_pretty_tokens", None)
        if pretty is not None:
            try:
                return list(pretty(target_tokens, self.tokenizer))
            except IndexError:  # Captum's fallback reads past the end on split byte tokens
                pass
        return [str(t) for t in self.tokenizer.convert_ids_to_tokens(target_tokens.tolist())]


def _feature_names(inp) -> list[str]:
    """One name per interpretable feature: its token / value, or its values joined."""
    mask = getattr(inp, "formatted_mask", None) if getattr(inp, "mask", None) else None
    if mask is None:
        return [str(v) for v in inp.values]
    names: list[list[str]] = [[] for _ in range(inp.n_itp_features)]
    for value, group in zip(inp.values, mask, strict=True):
        names[group].append(str(value))
    return [" ".join(parts) for parts in names]


@functools.cache
def _result_fields() -> frozenset[str]:
    """The keyword arguments the installed ``LLMAttributionResult`` accepts."""
    return frozenset(inspect.signature(LLMAttributionResult.__init__).parameters)
