"""Tests of tqla_torch.data: built-in corpus and tokenizer, loading, packing, data order."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest
import torch

from tqla_torch.data import (
    EOS_TOKEN,
    BlockOrder,
    PackedDataset,
    builtin_corpus,
    builtin_documents,
    builtin_tokenizer,
    load_texts,
    pack_tokens,
    tokenize_texts,
)


@pytest.fixture(scope="module")
def tok():
    return builtin_tokenizer(vocab_size=512)


# ---- built-in corpus ---------------------------------------------------------------------------


def test_builtin_splits_are_disjoint_and_deterministic():
    train = builtin_documents("train")
    validation = builtin_documents("validation")
    assert len(train) > 5 * len(validation) > 0
    assert not set(train) & set(validation)
    assert builtin_documents("train") == train
    assert builtin_corpus("validation") == "\n\n".join(validation)
    assert len(builtin_corpus("train")) > 100_000


def test_builtin_bad_split():
    with pytest.raises(ValueError, match="split must be one of"):
        builtin_corpus("test")


# ---- tokenizer ---------------------------------------------------------------------------------


def test_builtin_tokenizer_behaves_like_gpt2(tok):
    assert len(tok) == 512
    assert tok.eos_token == EOS_TOKEN and tok.bos_token == EOS_TOKEN
    assert tok.pad_token is None
    text = "def f(x):\n    return x ** 2  # ünïcode ✓"
    ids = tok(text)["input_ids"]
    assert tok.decode(ids) == text
    assert tok(EOS_TOKEN)["input_ids"] == [tok.eos_token_id]


def test_builtin_tokenizer_is_deterministic_and_independent(tok):
    other = builtin_tokenizer(vocab_size=512)
    assert other is not tok
    assert other.get_vocab() == tok.get_vocab()
    other.add_special_tokens({"pad_token": "<pad>"})  # modifying one leaves the cache alone
    assert builtin_tokenizer(vocab_size=512).pad_token is None


def test_builtin_tokenizer_save_and_reload(tmp_path, tok):
    from transformers import PreTrainedTokenizerFast

    builtin_tokenizer(vocab_size=512, save_dir=tmp_path / "tok")
    reloaded = PreTrainedTokenizerFast.from_pretrained(tmp_path / "tok")
    text = "The while statement is used for repeated execution."
    assert reloaded(text)["input_ids"] == tok(text)["input_ids"]
    assert reloaded.eos_token_id == tok.eos_token_id


@pytest.mark.parametrize("bad", [100, 256, 1.5, "512", True])
def test_builtin_tokenizer_bad_vocab(bad):
    with pytest.raises(ValueError, match="vocab_size"):
        builtin_tokenizer(vocab_size=bad)


# ---- loading -----------------------------------------------------------------------------------


def test_load_builtin():
    assert load_texts("builtin", split="validation") == builtin_documents("validation")


def test_load_txt_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("one document\nwith two lines\n", encoding="utf-8")
    assert load_texts(tmp_path / "a.txt") == ["one document\nwith two lines\n"]
    lines = [json.dumps({"body": t, "id": i}) for i, t in enumerate(["x", "y"])]
    (tmp_path / "b.jsonl").write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    assert load_texts(str(tmp_path / "b.jsonl"), text_field="body") == ["x", "y"]


def test_load_folder_reads_supported_files_in_order(tmp_path):
    (tmp_path / "2.txt").write_text("second", encoding="utf-8")
    (tmp_path / "1.jsonl").write_text('{"text": "first"}\n', encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    assert load_texts(tmp_path) == ["first", "second"]


def test_load_missing_path_names_it(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        load_texts(missing)


def test_load_bad_inputs(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{not json}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        load_texts(tmp_path / "bad.jsonl")
    (tmp_path / "nofield.jsonl").write_text('{"content": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"nofield.jsonl:1: .*'text' field"):
        load_texts(tmp_path / "nofield.jsonl")
    (tmp_path / "data.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unsupported file type '.csv'"):
        load_texts(tmp_path / "data.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="folder holds no"):
        load_texts(tmp_path / "empty")
    with pytest.raises(ValueError, match="text_field"):
        load_texts("builtin", text_field="")
    with pytest.raises(TypeError, match="source"):
        load_texts(42)


def test_hf_dataset_folder_without_datasets_names_the_package(tmp_path, monkeypatch):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "dataset_info.json").write_text("{}", encoding="utf-8")
    (folder / "state.json").write_text("{}", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(ImportError, match="'datasets'"):
        load_texts(folder)


def test_parquet_without_pyarrow_names_the_package(tmp_path, monkeypatch):
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match="'pyarrow'"):
        load_texts(tmp_path / "x.parquet")


# ---- Parquet files and datasets folders (written here; pyarrow/datasets in the test extra) ---


def _write_parquet(path, columns):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table(columns), path)


def test_parquet_reader(tmp_path, tok):
    _write_parquet(tmp_path / "a.parquet", {"text": ["first doc", "second"], "id": [1, 2]})
    assert load_texts(tmp_path / "a.parquet") == ["first doc", "second"]
    _write_parquet(tmp_path / "b.parquet", {"body": ["third"]})
    assert load_texts(tmp_path / "b.parquet", text_field="body") == ["third"]
    # a folder of Parquet files: sorted by name; every file needs the column
    folder = tmp_path / "shards"
    folder.mkdir()
    _write_parquet(folder / "01.parquet", {"text": ["c", "d"]})
    _write_parquet(folder / "00.parquet", {"text": ["a", "b"]})
    assert load_texts(folder) == ["a", "b", "c", "d"]
    data = PackedDataset.from_source(folder, tok, block_size=2)
    assert torch.equal(data.blocks.flatten()[:4], tokenize_texts(["a", "b"], tok)[:4])


def test_parquet_reader_bad_input(tmp_path):
    _write_parquet(tmp_path / "no_text.parquet", {"body": ["x"], "id": [1]})
    with pytest.raises(ValueError, match=r"no column 'text'.*text_field.*\['body', 'id'\]"):
        load_texts(tmp_path / "no_text.parquet")
    _write_parquet(tmp_path / "nulls.parquet", {"text": ["x", None]})
    with pytest.raises(ValueError, match="must hold strings; row 1 is null"):
        load_texts(tmp_path / "nulls.parquet")
    _write_parquet(tmp_path / "numbers.parquet", {"text": [1, 2]})
    with pytest.raises(ValueError, match="row 0 is int"):
        load_texts(tmp_path / "numbers.parquet")
    empty = pytest.importorskip("pyarrow").array([], "string")
    _write_parquet(tmp_path / "empty.parquet", {"text": empty})
    with pytest.raises(ValueError, match="holds no documents"):
        load_texts(tmp_path / "empty.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="not a readable Parquet file"):
        load_texts(tmp_path / "broken.parquet")


def test_datasets_save_to_disk_reader(tmp_path):
    datasets = pytest.importorskip("datasets")
    single = datasets.Dataset.from_dict({"text": ["one", "two"], "n": [1, 2]})
    single.save_to_disk(tmp_path / "single")
    assert load_texts(tmp_path / "single") == ["one", "two"]
    splits = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"content": ["t1", "t2", "t3"]}),
        validation=datasets.Dataset.from_dict({"content": ["v1"]}),
    )
    splits.save_to_disk(tmp_path / "dict")
    assert load_texts(tmp_path / "dict", text_field="content") == ["t1", "t2", "t3"]
    got = load_texts(tmp_path / "dict", text_field="content", split="validation")
    assert got == ["v1"]
    with pytest.raises(ValueError, match=r"splits \['train', 'validation'\], not split='test'"):
        load_texts(tmp_path / "dict", text_field="content", split="test")
    with pytest.raises(ValueError, match=r"no column 'text'.*\['content'\]"):
        load_texts(tmp_path / "dict")
    datasets.Dataset.from_dict({"text": ["a", None]}).save_to_disk(tmp_path / "nulls")
    with pytest.raises(ValueError, match="row 1 is null"):
        load_texts(tmp_path / "nulls")


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or directory"):
        load_texts(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="folder holds no"):
        load_texts(tmp_path / "empty")
    (tmp_path / "blank.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no documents"):
        load_texts(tmp_path / "blank.jsonl")


# ---- tokenising and packing --------------------------------------------------------------------


def test_tokenize_joins_documents_with_eos(tok):
    ids = tokenize_texts(["first doc", "second"], tok)
    eos = tok.eos_token_id
    assert ids.dtype == torch.int64
    positions = (ids == eos).nonzero().flatten().tolist()
    assert positions == [len(tok("first doc")["input_ids"]), len(ids) - 1]
    assert tokenize_texts("x", tok, add_eos=False).tolist() == tok("x")["input_ids"]
    assert tokenize_texts([], tok).numel() == 0
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tokenize_texts(["a", 3], tok)


def test_pack_tokens():
    blocks = pack_tokens(torch.arange(11), 4)
    assert blocks.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert blocks.dtype == torch.int64
    assert pack_tokens([1, 2, 3], 4).shape == (0, 4)
    with pytest.raises(ValueError, match="block_size must be at least 2"):
        pack_tokens(torch.arange(10), 1)
    with pytest.raises(ValueError, match="token_ids must be 1-D"):
        pack_tokens(torch.zeros(2, 5, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="integers"):
        pack_tokens(torch.zeros(10), 2)


def test_packed_dataset(tok):
    ds = PackedDataset.from_source("builtin", tok, block_size=64, split="validation")
    stream = tokenize_texts(builtin_documents("validation"), tok)
    assert len(ds) == stream.numel() // 64
    assert torch.equal(ds.blocks.flatten(), stream[: len(ds) * 64])
    assert ds.block_size == 64 and ds.n_tokens == len(ds) * 64
    assert torch.equal(ds[3], stream[192:256])
    with pytest.raises(ValueError, match="2-D"):
        PackedDataset(torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="integer token ids"):
        PackedDataset(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="non-negative"):
        PackedDataset(-torch.ones(2, 4, dtype=torch.int64))


# ---- data order --------------------------------------------------------------------------------


def test_block_order_epochs_are_seeded_permutations():
    order = BlockOrder(n_blocks=10, batch_size=3, seed=7)
    epoch0 = torch.cat([order.next_indices() for _ in range(3)])  # 9 of 10, tail skipped
    assert order.epoch == 0 and order.index == 9
    first_of_epoch1 = order.next_indices()
    assert order.epoch == 1 and order.index == 3
    assert len(set(epoch0.tolist())) == 9
    again = BlockOrder(n_blocks=10, batch_size=3, seed=7)
    assert torch.equal(torch.cat([again.next_indices() for _ in range(3)]), epoch0)
    expected = np.random.default_rng([7, 1]).permutation(10)[:3]
    assert first_of_epoch1.tolist() == expected.tolist()
    other_seed = BlockOrder(n_blocks=10, batch_size=9, seed=8).next_indices()
    assert not torch.equal(other_seed, epoch0)


def test_block_order_resumes_exactly():
    order = BlockOrder(n_blocks=13, batch_size=4, seed=1)
    for _ in range(5):
        order.next_indices()
    state = order.state_dict()
    expected = [order.next_indices() for _ in range(6)]
    restored = BlockOrder(n_blocks=13, batch_size=4, seed=1)
    restored.load_state_dict(state)
    assert all(
        torch.equal(a, b) for a, b in zip(expected, [restored.next_indices() for _ in range(6)])
    )
    with pytest.raises(ValueError, match="global_batch"):
        BlockOrder(n_blocks=13, batch_size=2, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        BlockOrder(n_blocks=13, batch_size=4, seed=2).load_state_dict(state)


def test_block_order_shards_partition_the_global_batch():
    single = BlockOrder(n_blocks=20, batch_size=6, seed=4)
    ranks = [BlockOrder(n_blocks=20, batch_size=2, seed=4, world_size=3, rank=r) for r in range(3)]
    for _ in range(7):
        joined = torch.cat([r.next_indices() for r in ranks])
        assert torch.equal(joined, single.next_indices())


def _step_sets(n_blocks, world, batch, accum, n_steps=9):
    """The sorted block indices of each optimizer step, over all ranks and micro-batches."""
    orders = [
        BlockOrder(n_blocks, batch, seed=5, world_size=world, rank=r, grad_accum=accum)
        for r in range(world)
    ]
    steps = []
    for _ in range(n_steps):
        taken = [i for _ in range(accum) for o in orders for i in o.next_indices().tolist()]
        steps.append(sorted(taken))
    return steps


@pytest.mark.parametrize("n_blocks", [10, 13, 16])
def test_block_order_steps_depend_on_the_global_batch_only(n_blocks):
    """Global batch 4 split as 1x4x1, 2x1x2, 2x2x1, 1x1x4, 4x1x1 (world x batch x accum): the
    same blocks in every optimizer step, across epochs (incomplete tails are skipped whole)."""
    reference = _step_sets(n_blocks, 1, 4, 1)
    assert all(len(set(s)) == 4 for s in reference)
    for world, batch, accum in [(2, 1, 2), (2, 2, 1), (1, 1, 4), (4, 1, 1)]:
        assert _step_sets(n_blocks, world, batch, accum) == reference, (world, batch, accum)


def test_block_order_resumes_under_another_split():
    one = BlockOrder(13, 4, seed=5)
    one.next_indices()
    state = one.state_dict()
    assert state["global_batch"] == 4
    two = [BlockOrder(13, 1, seed=5, world_size=2, rank=r, grad_accum=2) for r in range(2)]
    for order in two:
        order.load_state_dict(state)
    taken = sorted(i for _ in range(2) for o in two for i in o.next_indices().tolist())
    assert taken == sorted(one.next_indices().tolist())
    with pytest.raises(ValueError, match="global_batch=4, this run has global_batch=2"):
        BlockOrder(13, 1, seed=5, world_size=2).load_state_dict(state)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_blocks=0, batch_size=1), "n_blocks must be a positive int"),
        (dict(n_blocks=4, batch_size=1, grad_accum=0), "grad_accum must be a positive int"),
        (dict(n_blocks=4, batch_size=1, grad_accum=5), "fewer than one global batch"),
        (dict(n_blocks=4, batch_size=0), "batch_size must be a positive int"),
        (dict(n_blocks=4, batch_size=1, world_size=2, rank=2), "rank must be in"),
        (dict(n_blocks=4, batch_size=3, world_size=2), "fewer than one global batch"),
    ],
)
def test_block_order_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BlockOrder(**kwargs)
