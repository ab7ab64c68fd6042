from types import SimpleNamespace

from tasks.common import CACHED, checkpoint_slug


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
