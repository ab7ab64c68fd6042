"""Which files a user's task YAMLs are read from, and a digest that moves with their contents only."""

from __future__ import annotations

from pathlib import Path

from evals.task_files import task_files, task_files_digest


def test_the_yamls_helpers_and_the_data_they_name_outside_the_include_path(tmp_path, user_mc_task):
    tasks = user_mc_task(tmp_path)
    (tasks / "utils.py").write_text("def process_docs(dataset):\n    return dataset\n")
    (tasks / "notes.txt").write_text("not read by the harness")
    assert task_files([tasks]) == sorted(
        [tasks / "my_mc.yaml", tasks / "utils.py", tmp_path / "data" / "items.jsonl", tmp_path / "data" / "shots.jsonl"]
    )


def test_cutting_the_data_changes_the_digest_and_nothing_else_does(tmp_path, user_mc_task):
    tasks = user_mc_task(tmp_path)
    six = task_files_digest([tasks])
    assert task_files_digest([tasks]) == six  # the same files, the same digest
    (tasks / "notes.txt").write_text("not a task file")
    (tmp_path / "data" / "unnamed.jsonl").write_text("{}\n")
    (tmp_path / "hf-datasets").mkdir()
    (tmp_path / "hf-datasets" / "cache.arrow").write_bytes(b"written by datasets")
    assert task_files_digest([tasks]) == six
    user_mc_task(tmp_path, n_items=3)
    three = task_files_digest([tasks])
    assert three != six
    (tasks / "my_mc.yaml").write_text((tasks / "my_mc.yaml").read_text().replace("Answer:", "A:"))
    assert task_files_digest([tasks]) not in (six, three)


def test_shapes_of_data_files_tags_groups_and_hub_names(tmp_path, monkeypatch):
    data = tmp_path / "data"
    (data / "shards").mkdir(parents=True)
    for name in ("a.jsonl", "b.jsonl", "shards/0.jsonl", "shards/1.jsonl", "folder/x.parquet"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text(name)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "group.yaml").write_text(
        "group: mine\n"
        "task:\n"
        "  - task: one\n"
        "    dataset_path: json\n"
        "    dataset_kwargs: {data_files: [data/a.jsonl, data/b.jsonl]}\n"  # relative: from the working directory
        "    process_docs: !function utils.process_docs\n"
        "  - task: two\n"
        "    dataset_path: json\n"
        f"    dataset_kwargs: {{data_files: {{test: '{data}/shards/*.jsonl'}}}}\n"  # a glob
        "  - task: three\n"
        f"    dataset_path: {data / 'folder'}\n"  # a local data set folder
        "  - task: four\n"
        "    dataset_path: allenai/ai2_arc\n"  # the Hub: versioned there, not here
    )
    monkeypatch.chdir(tmp_path)
    assert task_files([Path("tasks")]) == [
        data / "a.jsonl", data / "b.jsonl", data / "folder" / "x.parquet", data / "shards" / "0.jsonl", data / "shards" / "1.jsonl",
        tasks / "group.yaml",
    ]  # fmt: skip
