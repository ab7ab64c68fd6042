from types import SimpleNamespace

from tasks.cache import CODE
from tasks.common import CACHED, checkpoint_slug
from tasks.persistence import STAGE_RECORDS


def test_a_display_label_never_reaches_a_cache_key():
    """Labels show what tells a method apart from the experiment's others, so adding a method to a config
    relabels the rest: that must not recompute their stages."""
    context = SimpleNamespace(task=SimpleNamespace(fn=SimpleNamespace(__module__="tasks.evaluate")))
    key = lambda **inputs: CACHED.compute_key(context, inputs, {})  # noqa: E731
    assert key(label="sparsegpt 50%", limit=3) == key(label="sparsegpt 50% (blocksize=128)", limit=3)
    assert key(label="sparsegpt 50%", limit=3) != key(label="sparsegpt 50%", limit=4)


def test_checkpoint_slugs_are_plain_directory_names():
    assert checkpoint_slug("wanda 2:4 +ft") == "wanda-2of4-+ft"
    assert checkpoint_slug("interlace[random, train-all] 25%") == "interlacerandom-train-all-25pct"
    assert checkpoint_slug("sparsegpt 50% (blocksize=32)") == "sparsegpt-50pct-blocksize32"


def test_the_stages_key_on_the_one_code_closure_and_keep_records_in_stage_records():
    # not a copy: rereading the tree (a long-lived process, benchmarks/cache_invalidation.py) must reach the stages
    assert any(policy is CODE for policy in CACHED.policies)
    assert CACHED.key_storage is STAGE_RECORDS


def test_offloading_never_reaches_a_cache_key():
    """Offloading changes no number (tests/pruning/local/test_offload.py): a stage computed with the whole
    model on the device is reused when the model is offloaded, and the other way round."""
    from pruning.specs import ModelSpec

    context = SimpleNamespace(task=SimpleNamespace(fn=SimpleNamespace(__module__="tasks.prune")))
    key = lambda **inputs: CACHED.compute_key(context, inputs, {})  # noqa: E731
    whole = ModelSpec(source="packaged:smollm2-135m", device="cuda")
    assert key(model=whole) == key(model=ModelSpec(source="packaged:smollm2-135m", device="cuda", offload="disk"))
    assert key(model=whole) != key(model=ModelSpec(source="packaged:smollm2-135m", device="cpu"))
