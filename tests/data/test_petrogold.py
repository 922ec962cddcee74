"""PetroGold from dante-corpora: sentence splits, token/tag alignment with the CoNLL-U, and a tagger that learns."""
from __future__ import annotations

import pytest
import torch

from taskloom.data.dataset import BatchLoader
from taskloom.data.datasets import DATASETS, load_dataset
from taskloom.data.datasets.petrogold import UPOS_TAGS, petrogold_path
from taskloom.evaluate.evaluator import evaluate_model
from taskloom.losses import task_losses
from taskloom.sequence_trunks import BiLSTM
from taskloom.sharing import MultiTaskModel
from taskloom.task import Task

conllu = pytest.importorskip("conllu")
try:
    PATH = petrogold_path()
except FileNotFoundError as missing:
    pytest.skip(f"PetroGold is not installed: {missing}", allow_module_level=True)

SENTENCES = 120


def reference(count: int) -> dict[str, list[dict]]:
    """The first sentences parsed directly with conllu's defaults: sent_id -> its word lines."""
    out = {}
    with open(PATH, encoding="utf-8") as handle:
        for sentence in conllu.parse_incr(handle):
            if len(out) == count:
                break
            out[sentence.metadata["sent_id"]] = [t for t in sentence if isinstance(t["id"], int)]
    return out


def feature_string(token: dict) -> str:
    feats = token["feats"]
    return "_" if not feats else "|".join(f"{key}={value}" for key, value in feats.items())


@pytest.fixture(scope="module")
def small():
    return load_dataset("petrogold", max_sentences=SENTENCES, seed=3)


def test_registered_with_three_tagging_tasks(small):
    assert "petrogold" in DATASETS
    assert [(t.name, t.kind) for t in small.tasks] == [("upos", "tagging"), ("feats", "tagging"), ("deprel", "tagging")]
    assert small.info["tag_counts"]["upos"] == 17 == small.tasks[0].num_outputs
    assert list(small.tasks[0].label_names) == list(UPOS_TAGS)
    counts = {t.name: t.num_outputs for t in small.tasks}
    assert counts == small.info["tag_counts"]
    assert sum(small.info["sentences"].values()) == SENTENCES


def test_splits_are_disjoint_by_sentence(small):
    ids = small.info["sent_ids"]
    assert sum(len(v) for v in ids.values()) == len(set().union(*map(set, ids.values()))) == SENTENCES
    assert set().union(*map(set, ids.values())) == set(reference(SENTENCES))
    assert len(small.train) == len(ids["train"]) and len(small.test) == len(ids["test"])


def test_tokens_and_tags_line_up_with_the_conllu(small):
    parsed = reference(SENTENCES)
    vocabulary = small.info["vocabulary"]
    tags = small.info["tags"]
    for split in ("train", "val", "test"):
        data = getattr(small, split)
        for row, sent_id in enumerate(small.info["sent_ids"][split]):
            words = parsed[sent_id][:100] if split == "train" else parsed[sent_id]  # max_length cuts training only
            length = int(data.inputs["lengths"][row])
            assert length == len(words)
            ids = data.inputs["tokens"][row]
            assert not ids[length:].any()
            for i, token in enumerate(words):
                if split == "train" or ids[i] != 1:
                    assert vocabulary[ids[i]] == token["form"]
                assert tags["upos"][data.targets["upos"][row, i]] == token["upos"]
                assert tags["feats"][data.targets["feats"][row, i]] == feature_string(token)
                assert tags["deprel"][data.targets["deprel"][row, i]] == token["deprel"]
            for name in ("upos", "feats", "deprel"):
                mask = data.masks[name][row]
                assert mask[:length].all() and not mask[length:].any()


def test_known_sentence_skips_multiword_tokens():
    """Sentence 2 of the file: 'na' (9-10) is split into 'em' + 'a'; only the words are tokens."""
    splits = load_dataset("petrogold", max_sentences=20)
    split = next(name for name, ids in splits.info["sent_ids"].items() if "247-20140910-MONOGRAFIA_0-2" in ids)
    data, row = getattr(splits, split), splits.info["sent_ids"][split].index("247-20140910-MONOGRAFIA_0-2")
    assert int(data.inputs["lengths"][row]) == 35  # 37 token lines, two of them multiword ranges (9-10 na, 27-28 às)
    words = [splits.info["vocabulary"][i] for i in data.inputs["tokens"][row, 7:11]]
    assert [w for w in words if w != "<unk>"] == [w for w in ["meridional", "em", "a", "costa"] if w in words]
    upos = [splits.info["tags"]["upos"][i] for i in data.targets["upos"][row, 7:11]]
    deprel = [splits.info["tags"]["deprel"][i] for i in data.targets["deprel"][row, 7:11]]
    assert upos == ["ADJ", "ADP", "DET", "NOUN"] and deprel == ["root", "case", "det", "obl"]
    assert "na" not in splits.info["vocabulary"]


def test_vocabulary_comes_from_training_sentences(small):
    assert small.info["vocabulary"][:2] == ["<pad>", "<unk>"]
    assert small.info["unknown_tokens"]["train"] == 0
    assert (small.train.inputs["tokens"] == 1).sum() == 0
    train_words = {small.info["vocabulary"][i] for i in small.train.inputs["tokens"].unique().tolist()} - {"<pad>"}
    assert train_words == set(small.info["vocabulary"][2:])
    assert small.info["unknown_tokens"]["test"] > 0
    lowered = load_dataset("petrogold", max_sentences=SENTENCES, seed=3, lowercase=True, min_count=2)
    assert all(w == w.lower() for w in lowered.info["vocabulary"][2:])
    assert lowered.info["vocab_size"] < small.info["vocab_size"]


def test_long_training_sentences_are_cut_and_counted_and_evaluation_keeps_every_gold_token():
    parsed = reference(SENTENCES)
    splits = load_dataset("petrogold", max_sentences=SENTENCES, max_length=12)
    train_ids = splits.info["sent_ids"]["train"]
    longer = [parsed[i] for i in train_ids if len(parsed[i]) > 12]
    assert splits.info["truncated_sentences"] == len(longer) > 0
    assert splits.info["truncated_tokens"] == sum(len(w) - 12 for w in longer)
    assert splits.input_shape == (12,) and splits.train.inputs["tokens"].shape[1] == 12
    assert splits.train.inputs["lengths"].tolist() == [min(len(parsed[i]), 12) for i in train_ids]
    for split in ("val", "test"):
        data, ids = getattr(splits, split), splits.info["sent_ids"][split]
        assert data.inputs["lengths"].tolist() == [len(parsed[i]) for i in ids]
        assert max(len(parsed[i]) for i in ids) > 12  # a long sentence is there, whole
        assert int(data.masks["upos"].sum()) == sum(1 for i in ids for t in parsed[i] if t["upos"] not in (None, "_"))
        assert splits.info["tokens"][split] == sum(len(parsed[i]) for i in ids)
        for row, sent_id in enumerate(ids):
            gold = [splits.info["tags"]["deprel"].index(t["deprel"]) for t in parsed[sent_id]]
            assert data.targets["deprel"][row, : len(gold)].tolist() == gold


def test_tasks_by_name_and_wrong_tag_count_refused():
    one = load_dataset("petrogold", tasks=["deprel"], max_sentences=30)
    assert [t.name for t in one.tasks] == ["deprel"] and list(one.train.targets) == ["deprel"]
    with pytest.raises(ValueError, match="has 17 tags; set num_outputs: 17"):
        load_dataset("petrogold", tasks=[Task("pos", "tagging", num_outputs=12, target="upos")], max_sentences=30)
    with pytest.raises(ValueError, match="unknown task 'lemma'"):
        load_dataset("petrogold", tasks=["lemma"], max_sentences=30)


def test_hard_sharing_bilstm_beats_the_majority_tag():
    torch.manual_seed(0)
    splits = load_dataset("petrogold", tasks=["upos", "deprel"], max_sentences=400, max_length=50, seed=0)
    trunk = BiLSTM(splits.info["vocab_size"], embedding_dim=32, hidden_size=32, num_layers=1, dropout=0.0)
    model = MultiTaskModel(trunk, splits.tasks)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    tasks = {t.name: t for t in splits.tasks}
    loader = BatchLoader(splits.train, 32, seed=0)
    for epoch in range(10):
        loader.set_epoch(epoch)
        for batch in loader:
            loss = sum(task_losses(model(batch.inputs), batch, tasks).values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    result = evaluate_model(model, splits.val, splits.tasks)
    upos = splits.val.targets["upos"][splits.val.masks["upos"]]
    majority = torch.bincount(upos).max().item() / len(upos)
    assert result["upos"]["labelled"] == len(upos)
    assert result["upos"]["accuracy"] > majority + 0.3


def write_treebank(folder, sentences_per_split):
    """Tiny UD files: a multiword token (2-3), an empty node (1.1) and an untagged UPOS ('_')."""
    block = (
        "# sent_id = {sid}\n"
        "1\tEle\tele\tPRON\t_\tGender=Masc\t3\tnsubj\t_\t_\n"
        "1.1\tvai\tir\tVERB\t_\t_\t_\t_\t0:root\t_\n"
        "2-3\tdo\t_\t_\t_\t_\t_\t_\t_\t_\n"
        "2\tde\tde\tADP\t_\t_\t3\tcase\t_\t_\n"
        "3\to\to\t_\t_\t_\t0\troot\t_\t_\n\n"
    )
    for split, word in (("train", "train"), ("val", "dev"), ("test", "test")):
        text = "".join(block.format(sid=f"{split}-{i}") for i in range(sentences_per_split))
        (folder / f"pt_tiny-ud-{word}.conllu").write_text(text, encoding="utf-8")


def test_treebank_files_give_the_splits_and_untagged_tokens_are_masked(tmp_path):
    write_treebank(tmp_path, 2)
    splits = load_dataset("petrogold", root=tmp_path)
    assert splits.info["split_from"] == "treebank files"
    assert splits.info["sent_ids"] == {s: [f"{s}-0", f"{s}-1"] for s in ("train", "val", "test")}
    assert splits.info["vocabulary"] == ["<pad>", "<unk>", "Ele", "de", "o"]
    assert splits.train.inputs["lengths"].tolist() == [3, 3]
    assert splits.train.masks["upos"].tolist() == [[True, True, False]] * 2
    assert splits.train.masks["deprel"].all()
    assert splits.info["tags"]["deprel"] == ["case", "nsubj", "root"]
    assert splits.info["tags"]["feats"] == ["Gender=Masc", "_"]
