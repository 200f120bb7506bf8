"""Image search: building, updating and resuming an index of generated colour squares, queries by text
and by image with the colour model, FAISS against exact search, duplicates, the CLI, and a build split
across two torchrun ranks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import clipforge
from clipforge.cli import main
from clipforge.models import create_model
from clipforge.search import (
    ImageIndex, IndexBusyError, IndexModelMismatch, Searcher, build_index, find_duplicates, model_fingerprint,
    search_vectors,
)
from clipforge.search.ann import build_ann, recall_at_k
from clipforge.search.exact import exact_top_k
from clipforge.search.query import approximate_index
from clipforge.search.store import IndexWriter
from colour_model import COLOURS, colour_image

VARIANTS = 5


def write_colours(folder: Path, variants: int = VARIANTS) -> list[Path]:
    """`<colour>_<variant>.png` in `folder`, the last variant of each colour in `folder/more/`."""
    (folder / "more").mkdir(parents=True, exist_ok=True)
    paths = []
    for colour in COLOURS:
        for variant in range(variants):
            path = folder / ("more" if variant == variants - 1 else "") / f"{colour}_{variant}.png"
            colour_image(colour, variant).save(path)
            paths.append(path)
    return paths


def build(folder: Path, index: Path, model: Path, **options) -> object:
    return build_index([folder], index, model, workers=0, progress=False, **options)


def indexed(index_path: Path) -> dict[str, np.ndarray]:
    """Every indexed path with its embedding."""
    with ImageIndex.open(index_path) as index, index.reading() as snapshot:
        stored = index.stored_files()
        return {path: np.array(snapshot.vectors[file.row]) for path, file in stored.items()}


@pytest.fixture(scope="module")
def colour_index(colour_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("colours")
    write_colours(folder)
    index_path = folder.parent / f"{folder.name}.index"
    build(folder, index_path, colour_model)
    return index_path


@pytest.fixture(scope="module")
def searcher(colour_index: Path) -> Searcher:
    return Searcher.for_index(ImageIndex.open(colour_index))


@pytest.mark.parametrize("colour", list(COLOURS))
def test_text_query_finds_images_of_that_colour(searcher: Searcher, colour: str):
    hits = searcher.by_text(f"a {colour} square", k=VARIANTS)
    assert [hit.path.name.split("_")[0] for hit in hits] == [colour] * VARIANTS
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))


def test_image_query_finds_the_same_colour(searcher: Searcher):
    hits = searcher.by_image(colour_image("blue", variant=7), k=3)
    assert all(hit.path.name.startswith("blue_") for hit in hits)


def test_folder_filter_returns_only_images_under_it(searcher: Searcher):
    folder = searcher.index.roots[0] / "more"
    hits = searcher.by_text("a red square", k=20, folder=folder)
    assert len(hits) == len(COLOURS) and hits[0].path == folder / f"red_{VARIANTS - 1}.png"
    assert all(hit.path.parent == folder for hit in hits)


def test_contains_only_indexed_files_inside_the_roots(colour_index: Path, tmp_path: Path):
    index = ImageIndex.open(colour_index)
    root = index.roots[0]
    assert index.contains(root / "red_0.png") and index.contains(root / "more" / ".." / "red_0.png")
    assert not index.contains(root / ".." / colour_index.name / "index.sqlite")
    assert not index.contains(root / "nothing.png") and not index.contains("/etc/passwd")
    assert len(index) == len(COLOURS) * VARIANTS


def test_index_records_its_model_and_refuses_another(colour_index: Path, colour_model: Path, tmp_path: Path):
    index = ImageIndex.open(colour_index)
    model, preprocess = clipforge.load(colour_model)
    assert index.model_id == model_fingerprint(model) and index.model_source == str(colour_model)
    other = create_model("tiny-vit")
    clipforge.save_model(other, tmp_path / "other")
    with pytest.raises(IndexModelMismatch):
        Searcher(index, other, preprocess)
    with pytest.raises(IndexModelMismatch):
        build(index.roots[0], colour_index, tmp_path / "other")


def test_fingerprint_is_stable_across_reloads_and_differs_between_weights(colour_model: Path):
    assert model_fingerprint(clipforge.load_model(colour_model)) == model_fingerprint(clipforge.load_model(colour_model))
    assert model_fingerprint(create_model("tiny-vit")) != model_fingerprint(create_model("tiny-vit"))


def test_update_embeds_new_and_changed_files_and_drops_deleted(colour_model: Path, tmp_path: Path):
    folder = tmp_path / "images"
    write_colours(folder)
    build(folder, tmp_path / "index", colour_model)
    colour_image("green", 1).save(folder / "red_0.png")  # changed: now green
    (folder / "blue_1.png").unlink()
    colour_image("yellow", 9).save(folder / "more" / "new.png")
    report = build(folder, tmp_path / "index", colour_model)
    assert (report.added, report.updated, report.removed, report.skipped) == (1, 1, 1, 0)
    assert report.indexed == len(COLOURS) * VARIANTS
    index = ImageIndex.open(tmp_path / "index")
    assert not index.contains(folder / "blue_1.png") and index.contains(folder / "more" / "new.png")
    green = {hit.path.name for hit in Searcher.for_index(index).by_text("a green square", k=VARIANTS + 1)}
    assert "red_0.png" in green
    header_view = np.load(index.embeddings_path, mmap_mode="r")  # changed and deleted rows were compacted away
    assert header_view.shape == (len(index), index.dim) == (index.rows, 32)


def test_touched_file_with_the_same_bytes_is_not_embedded_again(colour_model: Path, tmp_path: Path):
    folder = tmp_path / "images"
    write_colours(folder, variants=2)
    build(folder, tmp_path / "index", colour_model)
    os.utime(folder / "red_0.png", ns=(1, 1))
    report = build(folder, tmp_path / "index", colour_model)
    assert (report.added, report.updated, report.unchanged) == (0, 0, len(COLOURS) * 2)
    assert ImageIndex.open(tmp_path / "index").stored_files()[str(folder / "red_0.png")].record.mtime_ns == 1


def test_broken_files_are_skipped_and_listed_not_fatal(colour_model: Path, tmp_path: Path):
    folder = tmp_path / "images"
    write_colours(folder, variants=2)
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.jpg").write_text("not an image")
    (folder / "truncated.png").write_bytes((folder / "red_0.png").read_bytes()[:60])
    (folder / "notes.txt").write_text("not listed: not an image suffix")
    os.symlink(folder / "gone.png", folder / "dangling.png")
    report = build(folder, tmp_path / "index", colour_model)
    reasons = {file.path.name: file.reason for file in report.skipped_files}
    assert reasons == {"empty.png": "image empty", "text.jpg": "not an image", "truncated.png": "image corrupt",
                       "dangling.png": "image missing"}
    assert report.indexed == report.added == len(COLOURS) * 2
    (folder / "red_1.png").write_bytes(b"broken now")  # an indexed file that breaks leaves the index
    report = build(folder, tmp_path / "index", colour_model)
    assert report.skipped == 5 and not ImageIndex.open(tmp_path / "index").contains(folder / "red_1.png")


SLOW_BUILD = """
import sys, time
from clipforge.models import CLIP
from clipforge.search import build_index
encode_image = CLIP.encode_image
CLIP.encode_image = lambda self, *args, **kwargs: (time.sleep(0.25), encode_image(self, *args, **kwargs))[1]
build_index([sys.argv[1]], sys.argv[2], sys.argv[3], batch_size=2, workers=0, progress=False)
"""


def committed(index_path: Path) -> int:
    try:
        with sqlite3.connect(f"file:{index_path / 'index.sqlite'}?mode=ro", uri=True) as connection:
            return connection.execute("SELECT COUNT(*) FROM files").fetchone()[0]
    except sqlite3.Error:  # not created yet
        return 0


def test_killed_build_leaves_a_usable_index_and_the_rerun_completes_it(colour_model: Path, tmp_path: Path):
    folder = tmp_path / "images"
    total = len(write_colours(folder))
    process = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(folder), str(tmp_path / "index"),
                                str(colour_model)])
    deadline = time.monotonic() + 60
    while committed(tmp_path / "index") < 6 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = committed(tmp_path / "index")
    assert 6 <= done < total, "the build must be killed part-way"

    partial = ImageIndex.open(tmp_path / "index")
    assert len(Searcher.for_index(partial).by_text("a red square", k=total)) == done

    report = build(folder, tmp_path / "index", colour_model)
    assert (report.added, report.unchanged, report.indexed) == (total - done, done, total)
    build(folder, tmp_path / "clean", colour_model)
    resumed, clean = indexed(tmp_path / "index"), indexed(tmp_path / "clean")
    assert sorted(resumed) == sorted(clean) == sorted(str(path) for path in folder.rglob("*.png"))
    assert all(np.allclose(resumed[path], clean[path], atol=1e-5) for path in clean)
    assert ImageIndex.open(tmp_path / "index").rows == total  # no duplicate or orphan rows


def test_a_second_writer_is_refused(colour_index: Path):
    index = ImageIndex.open(colour_index)
    settings = {"model_id": index.model_id, "model_source": index.model_source, "dim": index.dim, "roots": index.roots}
    with IndexWriter.open_for_writing(colour_index, **settings):
        with pytest.raises(IndexBusyError):
            IndexWriter.open_for_writing(colour_index, **settings)


def random_unit_vectors(count: int, dim: int, seed: int, clusters: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dim), dtype=np.float32)
    if clusters:
        centres = np.random.default_rng(99).standard_normal((clusters, dim), dtype=np.float32)
        vectors = centres[rng.integers(clusters, size=count)] + 0.3 * vectors
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_exact_top_k_matches_a_full_sort_blockwise_and_on_a_subset():
    vectors, queries = random_unit_vectors(1000, 16, seed=0), random_unit_vectors(5, 16, seed=1)
    scores, rows = exact_top_k(vectors, queries, k=7, block_rows=64)
    assert np.array_equal(rows, np.argsort(-(queries @ vectors.T), axis=1)[:, :7])
    assert np.allclose(scores, np.take_along_axis(queries @ vectors.T, rows, axis=1))
    subset = np.arange(0, 1000, 3)
    _, rows = exact_top_k(vectors, queries, k=7, rows=subset, block_rows=64)
    assert np.array_equal(rows, subset[np.argsort(-(queries @ vectors[subset].T), axis=1)[:, :7]])


def test_faiss_index_reaches_the_recall_target_against_exact_search():
    vectors = random_unit_vectors(4000, 32, seed=0, clusters=40)
    ann = build_ann(vectors)
    assert ann.index.nlist > 1 and ann.nprobe < ann.index.nlist and ann.recall >= 0.95
    queries = random_unit_vectors(200, 32, seed=1, clusters=40)
    _, truth = exact_top_k(vectors, queries, 10)
    _, found = ann.search(queries, 10)
    assert recall_at_k(truth, found, 10) >= 0.95


def test_an_ivf_that_must_probe_every_list_gives_way_to_exact_search():
    vectors = random_unit_vectors(4000, 32, seed=0, clusters=40)
    ann = build_ann(vectors)
    snapshot = SimpleNamespace(ann=ann, vectors=vectors)
    assert approximate_index(snapshot, None) is ann
    assert approximate_index(snapshot, np.arange(10)) is None  # a small folder: exact is cheaper
    ann.nprobe = ann.index.nlist
    assert approximate_index(snapshot, None) is None


def test_large_index_answers_with_faiss_like_exact_search(colour_model: Path, tmp_path: Path):
    folder = tmp_path / "images"
    write_colours(folder, variants=25)  # 100 images: two inverted lists
    report = build(folder, tmp_path / "index", colour_model, ann_threshold=50)
    assert report.approximate
    index = ImageIndex.open(tmp_path / "index")
    with index.reading() as snapshot:
        assert snapshot.ann is not None and snapshot.ann.index.nlist == 2
        queries = np.array(snapshot.vectors[:10])
        _, exact_rows = exact_top_k(snapshot.vectors, queries, 5)
        exact_paths = [snapshot.paths(rows) for rows in exact_rows]
    hits = search_vectors(index, queries, k=5)
    assert np.mean([len({hit.path for hit in found} & set(truth)) / 5 for found, truth in zip(hits, exact_paths)]) >= 0.95
    folder_hits = search_vectors(index, queries[:1], k=30, folder=folder / "more")[0]
    assert len(folder_hits) == len(COLOURS) and all(hit.path.parent.name == "more" for hit in folder_hits)
    for path in list(folder.glob("*.png"))[:60]:
        path.unlink()
    assert not build(folder, tmp_path / "index", colour_model, ann_threshold=50).approximate


def test_dedup_groups_copies_and_keeps_distinct_images_apart(colour_index: Path, colour_model: Path, tmp_path: Path):
    folder = tmp_path / "images"
    folder.mkdir()
    for colour in COLOURS:
        colour_image(colour, 0).save(folder / f"{colour}.png")
    shutil.copy(folder / "red.png", folder / "red copy.png")
    colour_image("red", 0).save(folder / "red again.jpg", quality=95)
    build(folder, tmp_path / "index", colour_model)
    groups = find_duplicates(ImageIndex.open(tmp_path / "index"), threshold=0.999)
    assert [[path.name for path in group.paths] for group in groups] == [["red again.jpg", "red copy.png", "red.png"]]
    assert 0.999 <= groups[0].similarity <= 1.0001


def test_cli_builds_searches_by_text_and_image_updates_and_dedups(colour_model: Path, tmp_path: Path, capsys):
    folder = tmp_path / "images"
    write_colours(folder, variants=2)
    index = ["--index", str(tmp_path / "index")]
    assert main(["index", "build", str(folder), "--model", str(colour_model), "--workers", "1", "--no-progress",
                 "--json", *index]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == len(COLOURS) * 2
    assert main(["search", "a yellow square", "-k", "2", "--json", *index]) == 0
    # the two yellow squares, in either order: the model scores them within 0.002 of each other
    assert sorted(Path(hit["path"]).name for hit in json.loads(capsys.readouterr().out)) == ["yellow_0.png", "yellow_1.png"]
    colour_image("green", 3).save(tmp_path / "query.png")
    assert main(["search", "--image", str(tmp_path / "query.png"), "-k", "1", "--folder", str(folder / "more"), *index]) == 0
    assert capsys.readouterr().out.strip().endswith(str(folder / "more" / "green_1.png"))
    (folder / "green_0.png").unlink()
    assert main(["index", "update", "--workers", "0", "--no-progress", *index]) == 0
    assert "1 removed" in capsys.readouterr().out
    assert main(["dedup", "--threshold", "0.5", "--json", *index]) == 0
    assert len(json.loads(capsys.readouterr().out)) >= 1
    assert main(["search", *index]) == 1 and "either a text query or --image" in capsys.readouterr().err
    assert main(["search", "red", "--index", str(tmp_path / "nothing")]) == 1


def test_torchrun_ranks_embed_disjoint_shares_that_merge_into_one_index(colour_model: Path, tmp_path: Path):
    folder = tmp_path / "images"
    write_colours(folder, variants=3)
    build(folder, tmp_path / "single", colour_model)
    (folder / "broken.png").write_bytes(b"broken")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "clipforge.cli",
         "index", "build", str(folder), "--model", str(colour_model), "--index", str(tmp_path / "index"),
         "--workers", "0", "--no-progress", "--json"],
        capture_output=True, text=True, timeout=120, env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["added"] == report["indexed"] == len(COLOURS) * 3 and report["skipped"] == 1
    merged, single = indexed(tmp_path / "index"), indexed(tmp_path / "single")
    assert sorted(merged) == sorted(single)
    assert all(np.allclose(merged[path], single[path], atol=1e-5) for path in single)
    assert not (tmp_path / "index" / "parts").exists()
