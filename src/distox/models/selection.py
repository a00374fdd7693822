"""Which weights D3 measures its distance over (SPEC §1, "Selected weights θ_s").

The selection names modules; the selected tensors are the ``weight`` of every ``nn.Linear``
and ``nn.Conv2d`` inside them. ``"auto"`` is the final classifier: the last ``nn.Linear``
*in forward order* (found with hooks on one example batch when one is given, else in
registration order) — ``linear`` in PreAct-ResNet18, ``fc`` in torchvision ResNets, ``head``
in ViTs. A model without any ``nn.Linear`` (an all-convolutional network such as SqueezeNet or
Network-in-Network, whose logits are a 1×1 convolution's class maps, averaged) has the last
``nn.Conv2d`` in forward order as its classifier, provided that convolution has one output
channel per class (checked against the example batch's logits when one is given) —
:func:`classifier_name`.

``"all-linear"`` takes every ``nn.Linear``, ``"all"`` every ``nn.Linear`` and ``nn.Conv2d`` (the
whole network's weights; distox's default D3 preset), ``"all-but-first"`` all of them except the
first one the input meets in forward order (the stem: a bank of filters on raw pixels, e.g.
``conv1`` or a ViT's patch embedding). ``"batchnorm-fed"`` takes each ``nn.Linear``/``nn.Conv2d``
whose output a BatchNorm layer takes next (the next Linear, Conv2d or BatchNorm to run after it,
in forward order, is a BatchNorm), plus the final classifier: in a network with a BatchNorm after
every conv that is all of them; it leaves out weights nothing re-normalises, such as
squeeze-and-excitation convs and the hidden Linears of an MLP head. Names may be exact module
names or glob patterns (``fnmatch``), e.g. ``"layer4.*"``. ``"last:F"`` takes the deepest
fraction F of the Linear/Conv2d layers in forward order (``"last:0.5"``: the later half),
``"first:F"`` the shallowest fraction F and the final classifier. ``"linear-head"`` is a convolutional
network's fully connected head (:func:`linear_head`: the final classifier and the Linear layers
right before it on flat features, back to the last convolution — LeNet-5's three Linears); in any
other model, the final classifier (as ``"auto"``).

Attention written with PyTorch's ``nn.MultiheadAttention`` keeps its query/key/value projection as
parameters of its own (``in_proj_weight``, or ``q_proj_weight``/``k_proj_weight``/``v_proj_weight``
when keys and values have other widths), not in an ``nn.Linear``; its output projection is an
``nn.Linear``. distox's whole-network selections, ``"all"`` (the default preset's) and
``"all-but-first"``, take those projection weights too (:func:`attention_projections`), so D3
treats attention the same whether a model writes its projections as ``nn.Linear`` layers
(distox's ``small_vit``, timm's ViTs) or in PyTorch's module (torchvision's ViT,
``nn.TransformerEncoder``). ``"all-linear"`` and module names keep the letter of the method's
definition (SPEC §1: the weights of the ``nn.Linear``/``nn.Conv2d`` modules selected), and the
forward-order selections (``"auto"``, ``"linear-head"``, ``"batchnorm-fed"``, ``"last:F"``, ``"first:F"``) order
``nn.Linear``/``nn.Conv2d`` modules only.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import DistoxError
from ..utils import eval_mode

WEIGHTED = (nn.Linear, nn.Conv2d)
#: ``nn.MultiheadAttention``'s own projection weights (a packed one, or one each when the key and
#: value widths differ from the query's)
ATTENTION_PROJECTIONS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
#: every BatchNorm: 1d/2d/3d, SyncBatchNorm, lazy ones (as :func:`distox.utils.batchnorm_modules`)
BATCHNORMS = (nn.modules.batchnorm._BatchNorm,)


class SelectionError(DistoxError):
    """The layer selection matched nothing usable."""


def linear_forward_order(model: nn.Module, example: torch.Tensor | None = None) -> list[str]:
    """Names of ``nn.Linear`` modules in the order their forward runs (registration order
    when no ``example`` batch is given)."""
    return forward_order(model, example, (nn.Linear,))


def forward_order(model: nn.Module, example: torch.Tensor | None = None,
                  kinds: tuple[type[nn.Module], ...] = WEIGHTED) -> list[str]:
    """Names of the modules of ``kinds`` in the order their forward runs (a module called twice
    counts where it last ran; registration order when no ``example`` batch is given)."""
    return _last_runs(forward_calls(model, example, kinds))


def forward_calls(model: nn.Module, example: torch.Tensor | None = None,
                  kinds: tuple[type[nn.Module], ...] = WEIGHTED) -> list[str]:
    """Names of the modules of ``kinds``, one per call, in the order a forward pass on one example
    calls them (each module once, in registration order, when no ``example`` batch is given, or
    when none runs)."""
    return _traced(model, example, kinds)[0]


def _traced(model: nn.Module, example: torch.Tensor | None,
            kinds: tuple[type[nn.Module], ...]) -> tuple[list[str], object]:
    """One eval-mode, no-gradient forward pass on ``example[:1]``: (:func:`forward_calls`'s names,
    the model's output). Without an example, or without a module of ``kinds``, nothing runs: the
    names in registration order and no output (None)."""
    calls, out = _traced_inputs(model, example, kinds)
    return [n for n, _ in calls], out


def _traced_inputs(model: nn.Module, example: torch.Tensor | None,
                   kinds: tuple[type[nn.Module], ...]) -> tuple[list[tuple[str, int]], object]:
    """:func:`_traced` with each call's input: (name, dimensions of its first input; -1 when that is
    not a tensor or nothing ran) per call, and the model's output."""
    names = {m: n for n, m in model.named_modules() if isinstance(m, kinds)}
    if example is None or not names:
        return [(n, -1) for n in names.values()], None
    calls: list[tuple[str, int]] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: calls.append(
        (names[mod], i[0].dim() if i and isinstance(i[0], torch.Tensor) else -1))) for m in names]
    try:
        with eval_mode(model), torch.no_grad():
            out = model(example[:1])
    finally:
        for h in hooks:
            h.remove()
    return calls or [(n, -1) for n in names.values()], out


def _last_runs(calls: list[str]) -> list[str]:
    """Each name once, where it last occurs in ``calls``."""
    seen: list[str] = []
    for n in calls:
        if n in seen:
            seen.remove(n)
        seen.append(n)
    return seen


def batchnorm_fed_pairs(model: nn.Module, example: torch.Tensor | None = None) -> list[tuple[str, str]]:
    """(Linear/Conv2d module, the BatchNorm layer that runs right after it) name pairs, among Linear,
    Conv2d and BatchNorm modules in call order on ``example`` (registration order without one)."""
    calls = forward_calls(model, example, WEIGHTED + BATCHNORMS)
    modules = dict(model.named_modules())
    return [(n, nxt) for n, nxt in zip(calls, calls[1:])
            if isinstance(modules[n], WEIGHTED) and isinstance(modules[nxt], BATCHNORMS)]


def batchnorm_fed(model: nn.Module, example: torch.Tensor | None = None) -> list[str]:
    """Names of the Linear/Conv2d modules a BatchNorm layer runs right after
    (:func:`batchnorm_fed_pairs`), each once."""
    return list(dict.fromkeys(n for n, _ in batchnorm_fed_pairs(model, example)))


def classifier_name(model: nn.Module, example: torch.Tensor | None = None) -> str:
    """The name of ``model``'s final classifier: the last ``nn.Linear`` in forward order, or, in a
    model without any ``nn.Linear``, the last ``nn.Conv2d`` in forward order when it has as many
    output channels as the model has outputs (a convolutional classifier head; the outputs are
    counted on ``example``'s pass, which also orders the convs). Raises :class:`SelectionError`
    when there is neither."""
    order = linear_forward_order(model, example)
    if order:
        return order[-1]
    calls, out = _traced(model, example, (nn.Conv2d,))
    convs = _last_runs(calls)
    if convs:
        head = dict(model.named_modules())[convs[-1]]
        outputs = int(out.shape[-1]) if isinstance(out, torch.Tensor) and out.dim() >= 1 else None
        if outputs is None or head.out_channels == outputs:
            return convs[-1]
    raise SelectionError(
        "automatic layer selection needs a classifier: an nn.Linear, or a last nn.Conv2d with one "
        "output channel per class; this model has neither. Pass layers=[...] with module names "
        "(see model.named_modules())"
    )


def linear_head(model: nn.Module, example: torch.Tensor | None = None) -> list[str]:
    """Names of the ``nn.Linear`` layers of a convolutional network's fully connected head, in
    forward order: the final classifier and the Linear layers that run right before it, each on one
    feature vector per image (a 2-D input), back to the last ``nn.Conv2d`` — LeNet-5's three
    Linears over the flattened map, AlexNet's and VGG's classifier. Where that run of Linear layers
    does not start right after a convolution (a network of Linear layers alone, whose first layer
    reads the pixels; a transformer, whose earlier Linears run per token) or no ``example`` batch
    shows the calls, it is the final classifier alone; in a model without ``nn.Linear``, empty."""
    modules = dict(model.named_modules())
    calls = _traced_inputs(model, example, WEIGHTED)[0]  # registration order without an example
    linears = _last_runs([n for n, _ in calls if isinstance(modules[n], nn.Linear)])
    if not linears:  # no Linear, or none that runs (then the last registered one, as classifier_name)
        return [classifier_name(model)] if any(isinstance(m, nn.Linear) for m in modules.values()) else []
    head = linears[-1]  # the final classifier (:func:`classifier_name`), from the same pass
    run: list[str] = []  # the trailing calls of Linear layers, each on one vector per image
    i = len(calls) - 1
    while i >= 0 and isinstance(modules[calls[i][0]], nn.Linear) and calls[i][1] == 2:
        run.insert(0, calls[i][0])
        i -= 1
    after_conv = i >= 0 and isinstance(modules[calls[i][0]], nn.Conv2d)
    if not run or run[-1] != head or not after_conv:
        return [head]
    return _last_runs(run)


def attention_projections(module: nn.Module) -> dict[str, nn.Parameter]:
    """The query/key/value projection weights an ``nn.MultiheadAttention`` holds as parameters of
    its own (attribute name → parameter; empty for any other module, or where they are None)."""
    if not isinstance(module, nn.MultiheadAttention):
        return {}
    return {n: p for n in ATTENTION_PROJECTIONS if isinstance(p := getattr(module, n, None), nn.Parameter)}


def owning_module(model: nn.Module, weight_name: str) -> nn.Module:
    """The module a selected weight belongs to: ``"features.3.weight"`` → ``model.features[3]``
    (the names :func:`select_weights` returns; a top-level ``"weight"`` is the model's own)."""
    module_name, _, _ = weight_name.rpartition(".")
    return model.get_submodule(module_name)


#: The parameter behind a weight that hooks recompute before every forward (the older
#: ``torch.nn.utils.spectral_norm`` and ``weight_norm``): what an optimiser updates.
_HOOKED_WEIGHTS = ("weight_orig", "weight_v")


def weight_is_computed(module: nn.Module) -> bool:
    """Whether ``module``'s ``weight`` is a tensor computed from other parameters at every forward
    pass (a ``torch.nn.utils.parametrize`` parametrization, or the older hook-based spectral /
    weight norm) rather than a parameter of its own: an edit to it would not stay."""
    return module._parameters.get("weight") is None


def weight_parameter(module: nn.Module, name: str = "") -> nn.Parameter:
    """The parameter an optimiser trains for ``module``'s ``weight``: the weight itself; under a
    ``torch.nn.utils.parametrize`` parametrization (``parametrizations.weight_norm``,
    ``spectral_norm``, ``orthogonal``) the unconstrained original of the weight's shape (weight
    norm's direction ``v``, not its magnitude ``g``); under the older hook-based ``spectral_norm``
    / ``weight_norm``, ``weight_orig`` / ``weight_v``. There ``weight`` is a tensor computed from
    that parameter at every forward pass, and a distance or projection on a stale copy of it
    would do nothing, or fail in the backward pass. Raises :class:`SelectionError` when there is
    no such single parameter."""
    if not weight_is_computed(module):
        return module._parameters["weight"]
    if parametrize.is_parametrized(module, "weight"):
        originals = module.parametrizations["weight"]
        found = [p for n, p in originals.named_parameters(recurse=False) if n.startswith("original")]
        if len(found) > 1:
            found = [p for p in found if p.shape == module.weight.shape]
    else:
        found = [p for n in _HOOKED_WEIGHTS if isinstance(p := getattr(module, n, None), nn.Parameter)]
    if len(found) != 1:
        raise SelectionError(
            f"{name or type(module).__name__}: its weight is computed ({type(module.weight).__name__}) and no single "
            "parameter behind it was found; select other layers (layers=[...]) or remove the parametrization")
    return found[0]


def by_depth(model: nn.Module, item: str, example: torch.Tensor | None = None) -> list[str]:
    """``"last:F"``: the deepest fraction F (0 < F <= 1) of the Linear/Conv2d layers in forward
    order, at least one (the final classifier is always among them); ``"first:F"``: the shallowest
    fraction F, at least one, and the final classifier (:func:`classifier_name`)."""
    side, _, value = item.partition(":")
    try:
        fraction = float(value)
    except ValueError:
        fraction = -1.0
    if not 0 < fraction <= 1:
        raise SelectionError(f"layer selection '{item}': '{side}:F' takes a fraction 0 < F <= 1 of the layers")
    order = forward_order(model, example)
    count = max(1, round(fraction * len(order)))
    if side == "last":
        return order[len(order) - count:]
    head = classifier_name(model, example)
    return order[:count] + ([] if head in order[:count] else [head])


def select_weights(
    model: nn.Module,
    selection: str | Sequence[str] = "auto",
    example: torch.Tensor | None = None,
) -> dict[str, nn.Parameter]:
    """Map ``"<module>.weight"`` → parameter for every Linear/Conv2d inside the selected modules
    (and, under ``"all"``/``"all-but-first"``, ``"<module>.in_proj_weight"`` … for every
    ``nn.MultiheadAttention``'s own projections).

    Raises :class:`SelectionError` when the selection resolves to no Linear/Conv2d weight.
    """
    modules = dict(model.named_modules())
    if isinstance(selection, str):
        selection = [selection]
    chosen: list[str] = []
    attention: set[str] = set()  # nn.MultiheadAttention modules whose own projections are taken too
    for item in selection:
        if item == "auto":
            chosen.append(classifier_name(model, example))
        elif item == "linear-head":
            chosen += [n for n in (linear_head(model, example) or [classifier_name(model, example)]) if n not in chosen]
        elif item == "all-linear":
            chosen += [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        elif item == "all":
            attention |= {n for n, m in modules.items() if attention_projections(m)}
            chosen += [n for n, m in modules.items() if isinstance(m, WEIGHTED) or n in attention]
        elif item == "batchnorm-fed":
            chosen += [n for n in batchnorm_fed(model, example) if n not in chosen]
            head = classifier_name(model, example)
            chosen += [] if head in chosen else [head]
        elif item == "all-but-first":
            order = forward_order(model, example)
            first = order[0] if len(order) > 1 else None
            attention |= {n for n, m in modules.items() if attention_projections(m)}
            chosen += [n for n, m in modules.items() if (isinstance(m, WEIGHTED) or n in attention) and n != first]
        elif item.startswith(("last:", "first:")):
            chosen += [n for n in by_depth(model, item, example) if n not in chosen]
        else:
            matched = [n for n in modules if n and (n == item or fnmatch.fnmatchcase(n, item))]
            if not matched:
                sample = ", ".join(n for n in list(modules)[1:12])
                raise SelectionError(f"layer selection '{item}' matches no module (modules: {sample}, ...)")
            chosen += matched
    weights: dict[str, nn.Parameter] = {}
    for name in chosen:
        for sub_name, sub in modules[name].named_modules():
            full = ".".join(p for p in (name, sub_name) if p)
            if isinstance(sub, WEIGHTED):
                weights[f"{full}.weight" if full else "weight"] = weight_parameter(sub, full)
            if full in attention:
                for attr, param in attention_projections(sub).items():
                    weights[f"{full}.{attr}" if full else attr] = param
    if not weights:
        raise SelectionError(
            f"layer selection {list(selection)} contains no nn.Linear or nn.Conv2d weight"
        )
    return weights
