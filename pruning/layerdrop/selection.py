"""Which decoder layers to drop, and which to finetune afterwards: pure functions on redundancy numbers.

Every selector returns a `DropPlan` of original layer indices. K = floor(rho * L) layers are dropped.
`finetune` says which of the kept layers train afterwards:
  "interleaved": the selector's own choice (INTERLACE: the partner of each dropped layer);
  "all": every kept layer (the baselines' "healing"; INTERLACE's finetune-all ablation), no anchors;
  "none": no finetuning.
Protected layers (Qwen3-VL's DeepStack layers, see `surgery.protected_layers`) are never dropped;
they may be finetuned or serve as anchors.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pruning.errors import ConfigError

if TYPE_CHECKING:
    from pruning.layerdrop.redundancy import LayerRedundancy

FinetuneMode = Literal["interleaved", "all", "none"]
FINETUNE_MODES = ("interleaved", "all", "none")


@dataclass(frozen=True)
class DropPlan:
    """Sorted original indices: layers to drop, kept layers to finetune, kept layers frozen as anchors."""

    drop: tuple[int, ...]
    finetune: tuple[int, ...]
    anchor: tuple[int, ...]
    n_layers: int

    def __post_init__(self):
        for name in ("drop", "finetune", "anchor"):
            object.__setattr__(self, name, tuple(sorted(int(index) for index in getattr(self, name))))
        named = self.drop + self.finetune + self.anchor
        if len(set(named)) != len(named):
            raise ValueError(f"a layer is in two of drop {self.drop}, finetune {self.finetune}, anchor {self.anchor}")
        if any(not 0 <= index < self.n_layers for index in named):
            raise ValueError(f"plan names layers outside 0..{self.n_layers - 1}: {sorted(named)}")

    @property
    def kept(self) -> tuple[int, ...]:
        dropped = set(self.drop)
        return tuple(index for index in range(self.n_layers) if index not in dropped)

    def to_dict(self) -> dict:
        return {"drop": list(self.drop), "finetune": list(self.finetune), "anchor": list(self.anchor), "n_layers": self.n_layers}

    @classmethod
    def from_dict(cls, data: dict) -> DropPlan:
        return cls(drop=tuple(data["drop"]), finetune=tuple(data["finetune"]), anchor=tuple(data["anchor"]), n_layers=data["n_layers"])


def n_layers_to_drop(drop_ratio: float, n_layers: int) -> int:
    """K = floor(rho * L), checked: 0 < rho < 1 and 1 <= K < L."""
    if not 0.0 < drop_ratio < 1.0:
        raise ValueError(f"drop_ratio must lie in (0, 1), got {drop_ratio}")
    n_drop = math.floor(drop_ratio * n_layers + 1e-9)  # 0.29 * 100 is 28.999999999999996 in floats
    if n_drop < 1:
        raise ValueError(f"drop_ratio={drop_ratio} of {n_layers} layers drops none (K = floor(rho * L) = {n_drop})")
    if n_drop >= n_layers:
        raise ValueError(f"drop_ratio={drop_ratio} of {n_layers} layers would drop all of them (K = {n_drop})")
    return n_drop


def _check_count(n_drop: int, n_layers: int, protected: frozenset[int]) -> None:
    droppable = n_layers - len(protected)
    if n_drop < 1 or n_drop >= n_layers:
        raise ValueError(f"number of layers to drop must be in 1..{n_layers - 1} for {n_layers} layers, got {n_drop}")
    if n_drop > droppable:
        raise ValueError(f"cannot drop {n_drop} layers: only {droppable} of {n_layers} are not protected {sorted(protected)}")


def _plan(
    drop: Sequence[int],
    n_layers: int,
    finetune: FinetuneMode,
    interleaved: Sequence[int] | None = None,
    anchor: Sequence[int] = (),
    method: str = "",
) -> DropPlan:
    """A plan with the finetune set the mode asks for; `interleaved` is the selector's own set (None: it has none)."""
    if finetune == "none":
        return DropPlan(drop=tuple(drop), finetune=(), anchor=(), n_layers=n_layers)
    if finetune == "all":
        kept = [index for index in range(n_layers) if index not in set(drop)]
        return DropPlan(drop=tuple(drop), finetune=tuple(kept), anchor=(), n_layers=n_layers)
    if finetune == "interleaved":
        if interleaved is None:
            raise ValueError(f"{method} has no interleaved finetune set; use finetune='all' (healing) or 'none'")
        return DropPlan(drop=tuple(drop), finetune=tuple(interleaved), anchor=tuple(anchor), n_layers=n_layers)
    raise ValueError(f"finetune must be one of {FINETUNE_MODES}, got {finetune!r}")


# --- INTERLACE (Madinei et al., 2025, arXiv 2511.19676, Sec. 3) ---


def interlace_plan(
    s1: Sequence[float],
    s2: Sequence[float],
    s3: Sequence[float],
    n_drop: int,
    protected: frozenset[int] = frozenset(),
    finetune: FinetuneMode = "interleaved",
    reach_output: bool = True,
) -> DropPlan:
    """Greedy non-overlapping triplets (i, i+1, i+2) by s_3(i), most redundant first; in each, drop the
    first two's more redundant layer by s_1 (ties: the first), finetune the other, freeze the third as
    anchor. When triplets run out, non-overlapping pairs (i, i+1) of unused layers by s_2(i), without
    anchor. `s_p[i]` = cos(h_i, h_{i+p}): len(s1) = L, len(s2) = L - 1, len(s3) = L - 2.
    A triplet or pair whose first two layers are both protected is skipped; if one is, the other drops.
    `reach_output=False` leaves out the windows that end at the last layer's output h_L (triplet L-3,
    pair L-2), as INTERLACE's `get_hidden_states.py` does (it scores i in range(L - p) only).
    Ranking, tie-breaking and the pair fallback are those of `select_layers_interlace` in
    pmadinei/Interlace `src/train/train_interlace.py` (a stable descending sort; `<` within the pair).
    """
    n_layers = len(s1)
    if len(s2) != n_layers - 1 or len(s3) != n_layers - 2:
        raise ValueError(f"s1, s2, s3 must have L, L-1, L-2 entries; got {len(s1)}, {len(s2)}, {len(s3)}")
    _check_count(n_drop, n_layers, protected)
    if not reach_output:
        s2, s3 = s2[:-1], s3[:-1]
    drop: list[int] = []
    partners: list[int] = []
    anchors: list[int] = []
    used: set[int] = set()

    def take(group: tuple[int, ...]) -> None:
        first, second = group[0], group[1]
        candidates = [index for index in (first, second) if index not in protected]
        if not candidates:
            return
        dropped = candidates[0] if len(candidates) == 1 else (second if s1[first] < s1[second] else first)
        drop.append(dropped)
        partners.append(second if dropped == first else first)
        anchors.extend(group[2:])
        used.update(group)

    for size, similarity in ((3, s3), (2, s2)):
        # sorted() is stable: equal similarities keep the lower start first
        for start in sorted(range(len(similarity)), key=lambda i: similarity[i], reverse=True):
            if len(drop) == n_drop:
                break
            group = tuple(range(start, start + size))
            if not used.intersection(group):
                take(group)
    if len(drop) < n_drop:
        raise ValueError(
            f"interlace found only {len(drop)} non-overlapping triplets/pairs with a droppable layer among "
            f"{n_layers} layers (protected: {sorted(protected)}), but {n_drop} layers are to be dropped; "
            "lower the drop ratio"
        )
    return _plan(drop, n_layers, finetune, partners, anchors, "interlace")


# --- ablations of INTERLACE's selection ---


def consecutive_plan(
    block_similarity: Sequence[float],
    n_drop: int,
    protected: frozenset[int] = frozenset(),
    finetune: FinetuneMode = "interleaved",
) -> DropPlan:
    """Drop the contiguous run [i, i+K) of highest `block_similarity[i]`, i = 0..L-K: s_K(i) = cos(h_i,
    h_{i+K}) (the run whose ends are most alike), or s_1(i) cut to L-K+1 entries (the run starting at the
    most redundant layer that fits, as `select_layers_consecutive` in pmadinei/Interlace starts at the
    highest pack-1 similarity).

    Its interleaved finetune set is the K kept layers nearest the run, those after it first (that
    reference trains the K layers after it).
    """
    n_layers = len(block_similarity) + n_drop - 1
    start = _best_block(block_similarity, n_drop, protected, lowest=False)
    drop = range(start, start + n_drop)
    nearest = [*range(start + n_drop, n_layers), *range(start - 1, -1, -1)][:n_drop]
    return _plan(drop, n_layers, finetune, nearest, (), "consecutive")


def random_plan(
    n_layers: int,
    n_drop: int,
    seed: int,
    protected: frozenset[int] = frozenset(),
    finetune: FinetuneMode = "interleaved",
) -> DropPlan:
    """K layers drawn at random (seeded); its interleaved finetune set is K more kept layers drawn at random."""
    _check_count(n_drop, n_layers, protected)
    rng = random.Random(seed)
    drop = rng.sample([index for index in range(n_layers) if index not in protected], n_drop)
    kept = [index for index in range(n_layers) if index not in set(drop)]
    return _plan(drop, n_layers, finetune, rng.sample(kept, min(n_drop, len(kept))), (), "random")


# --- baselines ---


def shortgpt_plan(
    block_influence: Sequence[float],
    n_drop: int,
    protected: frozenset[int] = frozenset(),
    finetune: FinetuneMode = "none",
) -> DropPlan:
    """ShortGPT (Men et al., 2024): drop the K layers of lowest Block Influence BI(i) = 1 - cos(h_i, h_{i+1})."""
    n_layers = len(block_influence)
    _check_count(n_drop, n_layers, protected)
    ranked = sorted((index for index in range(n_layers) if index not in protected), key=lambda i: block_influence[i])
    return _plan(ranked[:n_drop], n_layers, finetune, None, (), "shortgpt")


def angular_plan(
    distances: Sequence[float],
    n_drop: int,
    protected: frozenset[int] = frozenset(),
    finetune: FinetuneMode = "none",
) -> DropPlan:
    """Gromov et al. (2024): drop the contiguous run [i, i+K) of smallest angular distance d(i, K)
    = arccos(cos(h_i, h_{i+K})) / pi on the last token. `distances[i]` = d(i, K), i = 0..L-K."""
    n_layers = len(distances) + n_drop - 1
    start = _best_block(distances, n_drop, protected, lowest=True)
    return _plan(range(start, start + n_drop), n_layers, finetune, None, (), "angular")


def sleb_plan(
    order: Sequence[int],
    n_layers: int,
    n_drop: int,
    protected: frozenset[int] = frozenset(),
    finetune: FinetuneMode = "none",
) -> DropPlan:
    """SLEB (Song et al., 2024): the first K layers of its removal order (`redundancy.sleb_order`)."""
    _check_count(n_drop, n_layers, protected)
    drop = [index for index in order if index not in protected][:n_drop]
    if len(drop) < n_drop:
        raise ValueError(f"the SLEB order {list(order)} names {len(drop)} droppable layers; {n_drop} are to be dropped")
    return _plan(drop, n_layers, finetune, None, (), "sleb")


def _best_block(scores: Sequence[float], n_drop: int, protected: frozenset[int], lowest: bool) -> int:
    """Start of the best contiguous run of n_drop layers free of protected layers (ties: the first)."""
    n_layers = len(scores) + n_drop - 1
    _check_count(n_drop, n_layers, protected)
    starts = [start for start in range(len(scores)) if not protected.intersection(range(start, start + n_drop))]
    if not starts:
        raise ValueError(f"no run of {n_drop} consecutive layers avoids the protected layers {sorted(protected)}")
    return min(starts, key=lambda start: scores[start] if lowest else -scores[start])


# --- registry: selectors by name, fed from what the pipeline measured ---


@dataclass(frozen=True)
class SelectionInputs:
    n_layers: int
    n_drop: int
    protected: frozenset[int] = frozenset()
    redundancy: LayerRedundancy | None = None
    sleb_order: tuple[int, ...] | None = None
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)  # the selector's own, by name (`LayerSelector.options`)


@dataclass(frozen=True)
class LayerSelector:
    needs: Literal["redundancy", "sleb_order", "nothing"]
    default_finetune: FinetuneMode
    select: Callable[[SelectionInputs, FinetuneMode], DropPlan] = field(repr=False)
    options: tuple[str, ...] = ()  # keyword options it reads from `SelectionInputs.options`


LAYER_SELECTORS: dict[str, LayerSelector] = {}


def register_selector(name: str, needs: str, default_finetune: FinetuneMode, options: tuple[str, ...] = ()):
    def register(select: Callable[[SelectionInputs, FinetuneMode], DropPlan]):
        LAYER_SELECTORS[name] = LayerSelector(needs=needs, default_finetune=default_finetune, select=select, options=options)  # type: ignore[arg-type]
        return select

    return register


@register_selector("interlace", "redundancy", "interleaved", options=("tokens", "windows"))
def _interlace(inputs: SelectionInputs, finetune: FinetuneMode) -> DropPlan:
    """Options: tokens "mean" (default) | "last": which cosines s_p reads; windows "to_output" (default) |
    "to_last_input": whether the windows ending at h_L are candidates."""
    r, tokens = inputs.redundancy, inputs.options.get("tokens", "mean")
    windows = inputs.options.get("windows", "to_output")
    if windows not in ("to_output", "to_last_input"):
        raise ValueError(f"windows must be 'to_output' or 'to_last_input', got {windows!r}")
    return interlace_plan(
        r.s(1, tokens), r.s(2, tokens), r.s(3, tokens), inputs.n_drop, inputs.protected, finetune, reach_output=windows == "to_output"
    )


@register_selector("consecutive", "redundancy", "interleaved", options=("tokens", "start"))
def _consecutive(inputs: SelectionInputs, finetune: FinetuneMode) -> DropPlan:
    """Options: tokens as for interlace; start "block" (default: highest s_K) | "layer" (highest s_1)."""
    r, tokens, start = inputs.redundancy, inputs.options.get("tokens", "mean"), inputs.options.get("start", "block")
    if start not in ("block", "layer"):
        raise ValueError(f"start must be 'block' or 'layer', got {start!r}")
    n_starts = inputs.n_layers - inputs.n_drop + 1
    similarity = r.s(inputs.n_drop, tokens) if start == "block" else r.s(1, tokens)[:n_starts]
    return consecutive_plan(similarity, inputs.n_drop, inputs.protected, finetune)


@register_selector("random", "nothing", "interleaved")
def _random(inputs: SelectionInputs, finetune: FinetuneMode) -> DropPlan:
    return random_plan(inputs.n_layers, inputs.n_drop, inputs.seed, inputs.protected, finetune)


@register_selector("shortgpt", "redundancy", "none")
def _shortgpt(inputs: SelectionInputs, finetune: FinetuneMode) -> DropPlan:
    return shortgpt_plan(inputs.redundancy.block_influence(), inputs.n_drop, inputs.protected, finetune)


@register_selector("angular", "redundancy", "none", options=("average",))
def _angular(inputs: SelectionInputs, finetune: FinetuneMode) -> DropPlan:
    """Option: average "cosine" (default: arccos of the mean last-token cosine) | "distance" (mean of
    each sequence's distance)."""
    average = inputs.options.get("average", "cosine")
    if average not in ("cosine", "distance"):
        raise ValueError(f"average must be 'cosine' or 'distance', got {average!r}")
    distances = inputs.redundancy.angular_distance(inputs.n_drop, average)
    return angular_plan(distances, inputs.n_drop, inputs.protected, finetune)


@register_selector("sleb", "sleb_order", "none")
def _sleb(inputs: SelectionInputs, finetune: FinetuneMode) -> DropPlan:
    return sleb_plan(inputs.sleb_order, inputs.n_layers, inputs.n_drop, inputs.protected, finetune)


def layer_selector(name: str) -> LayerSelector:
    try:
        return LAYER_SELECTORS[name]
    except KeyError:
        raise ConfigError(f"no layer selector {name!r}; known: {', '.join(sorted(LAYER_SELECTORS))}") from None


def edge_layers(n_layers: int, first: int = 0, last: int = 0) -> frozenset[int]:
    """The first `first` and last `last` of `n_layers` layers (what SLEB's reference calls its early and
    latter barriers): layers a method may not drop. At least one layer must stay eligible."""
    if first < 0 or last < 0:
        raise ValueError(f"protect_first and protect_last must be >= 0, got {first}, {last}")
    if first + last >= n_layers:
        raise ValueError(f"protecting the first {first} and last {last} of {n_layers} layers leaves none to drop")
    return frozenset(range(first)) | frozenset(range(n_layers - last, n_layers))


def select_layers(
    method: str,
    drop_ratio: float,
    n_layers: int,
    *,
    redundancy: LayerRedundancy | None = None,
    sleb_order: Sequence[int] | None = None,
    protected: Sequence[int] | frozenset[int] = frozenset(),
    seed: int = 0,
    finetune: FinetuneMode | None = None,
    protect_first: int = 0,
    protect_last: int = 0,
    options: Mapping[str, Any] | None = None,
) -> DropPlan:
    """The plan of selector `method` dropping floor(drop_ratio * n_layers) layers.

    `redundancy` feeds interlace/consecutive/shortgpt/angular, `sleb_order` feeds sleb; `finetune`
    None takes the selector's default ("interleaved" for interlace and its ablations, else "none").
    The first `protect_first` and last `protect_last` layers join `protected`: never dropped (they may
    still train or anchor). `options` are the selector's own (`LayerSelector.options`).
    """
    selector = layer_selector(method)
    n_drop = n_layers_to_drop(drop_ratio, n_layers)
    unknown = sorted(set(options or {}) - set(selector.options))
    if unknown:
        raise ConfigError(f"layer selector {method!r} has no option {', '.join(unknown)}; it reads: {', '.join(selector.options) or 'none'}")
    if selector.needs == "redundancy":
        if redundancy is None:
            raise ValueError(f"{method} selects from layer redundancy; pass redundancy=")
        if redundancy.n_layers != n_layers:
            raise ValueError(f"redundancy covers {redundancy.n_layers} layers, the model has {n_layers}")
    if selector.needs == "sleb_order" and sleb_order is None:
        raise ValueError(f"{method} selects from a SLEB removal order; pass sleb_order=")
    inputs = SelectionInputs(
        n_layers=n_layers,
        n_drop=n_drop,
        protected=frozenset(protected) | edge_layers(n_layers, protect_first, protect_last),
        redundancy=redundancy,
        sleb_order=tuple(sleb_order) if sleb_order is not None else None,
        seed=seed,
        options=dict(options or {}),
    )
    return selector.select(inputs, finetune or selector.default_finetune)
