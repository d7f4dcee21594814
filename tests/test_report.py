"""Seed repeats in a rebuilt table, and the report: every table cell in the HTML, one expected-best
figure per study, fANOVA importances from the Parquet rows."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from seqrep import figures, report, studydir, summary, tables
from seqrep.cli import main

SPACE = "table7-nn-toy"


def make_study(root: Path, name: str, seed: int, n: int = 6) -> Path:
    """A finished study folder of the table7-nn-toy space with n trials (no Ray needed)."""
    rng = np.random.default_rng(seed)
    d = root / name
    (d / "ray").mkdir(parents=True)
    studydir.write_record(d, {"name": name, "space": SPACE, "space_path": "", "method": "mlp", "dataset": "toy",
                              "seed": seed, "metric": "valid_nll", "mode": "min", "cpus_per_trial": 1.0,
                              "gpus_per_trial": 0.0, "command": "seqrep test", "git_commit": "abc"})
    for i in range(n):
        t = d / "ray" / f"t{i}"
        t.mkdir()
        config = {"hidden_units": int(rng.choice([10, 25, 50, 100])), "step_rate": float(10 ** rng.uniform(-4, -1)),
                  "transfer": str(rng.choice(["sigmoid", "rectifier"])), "hidden_layers": 1, "batch_size": 10,
                  "decay": 0.9, "momentum": 0.5}
        nll = 1.0 + abs(math.log10(config["step_rate"]) + 2.5) + rng.normal(0, 0.05)
        final = {"epoch": 5, "valid_nll": nll, "valid_mse": nll, "test_nll": nll + 0.1, "test_mse": nll + 1.0,
                 "best_epoch": 5, "seqrep_status": "completed", "history": []}
        (t / "params.json").write_text(json.dumps(config))
        (t / "result.json").write_text(json.dumps(final) + "\n")
    summary.write(d)
    return d


def test_repeats_give_mean_std_and_the_within_flag(tmp_path):
    dirs = [make_study(tmp_path, f"s{k}", k) for k in range(3)]
    frame = tables.build("table7", lambda space, dataset: dirs if space == SPACE else None, ["toy"])
    row = frame[(frame["method"] == "NN") & (frame["metric"] == "test_nll")].iloc[0]
    bests = [summary.read(d).sort_values("valid_nll").iloc[0]["test_nll"] for d in dirs]
    assert row["ours"] == pytest.approx(np.mean(bests)) and row["ours_std"] == pytest.approx(np.std(bests, ddof=1))
    assert row["repeats"] == 3 and row["trials"] == 18 and row["study"] == "s0;s1;s2"
    assert tables.within("2.0", 1.0, 0.6, "test_nll") == "yes"
    assert tables.within("2.0", 1.0, 0.4, "test_nll") == "better"
    assert tables.within("2.0", 3.0, 0.4, "test_nll") == "no"
    assert tables.within("0.9", 0.5, 0.1, "test_1nn_accuracy") == "no"  # higher is better
    assert "| toy | NN | 4.2395 |" in tables.to_markdown("table7", frame) and "within 2σ" in tables.to_markdown("table7", frame)


@pytest.mark.parametrize("relative", [False, True])  # a manifest names studies relative to its own folder
def test_the_report_holds_every_table_cell_and_one_expected_best_figure_per_study(tmp_path, relative):
    dirs = [make_study(tmp_path / "studies", f"s{k}", k) for k in range(2)]
    named = [f"../studies/s{k}" for k in range(2)] if relative else [str(d) for d in dirs]
    frame = tables.build("table7", lambda space, dataset: dirs if space == SPACE else None, ["toy"])
    out = tmp_path / "tables"
    tables.write("table7", frame, out)
    tables.write_manifest("table7", out, {"command": "seqrep reproduce table7", "git_commit": "abc", "started": "now",
                                          "wall_s": 1.0, "repeats": 2,
                                          "studies": {f"{SPACE}|toy": named}})
    assert main(["report", "table7", "--out", str(out)]) == 0
    page = (out / "table7-report.html").read_text()
    cells = pd.read_csv(out / "table7.csv", dtype=str, keep_default_na=False)
    for column in ("dataset", "method", "metric", "thesis", "within"):
        for value in cells[column]:
            assert f">{value}<" in page
    for value in cells["ours"].replace("", np.nan).dropna():
        assert f">{tables.format_value(float(value))}<" in page
    assert len(re.findall(r'<img alt="s\d-expected"', page)) == 2
    assert page.count("<img") == 6  # expected best, importance, scatter for each study
    assert (dirs[0] / "expected_best.csv").exists()
    md = (out / "table7-report.md").read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert len(links) == 6 and "figures/table7/s0-expected.png" in links
    assert all((out / link).is_file() for link in links)
    assert "Trials of studies reused" not in md  # no commits recorded: nothing to say
    manifest = tables.read_manifest("table7", out)
    tables.write_manifest("table7", out, {**manifest, "study_commits": {"abc": 1, "0123456789ab": 2, "": 1}})
    assert main(["report", "table7", "--out", str(out)]) == 0
    assert "1 s of wall time; 2 seed(s) per study. Trials of studies reused from earlier runs ran at 0123456 " \
           "(2 studies), an unknown commit (1 study)." in (out / "table7-report.md").read_text()


def test_importance_ranks_the_parameter_that_drives_the_metric_first(tmp_path):
    found = report.importance(make_study(tmp_path, "s", 0, n=30))
    assert set(found) == {"hidden_layers", "transfer", "hidden_units", "batch_size", "step_rate", "decay", "momentum"}
    assert list(found)[0] == "step_rate" and found["step_rate"] > 0.5


def test_a_study_report_from_the_command_line(tmp_path, capsys):
    study = make_study(tmp_path, "one", 3, n=5)
    assert main(["report", str(study)]) == 0
    assert capsys.readouterr().out == f"seqrep: wrote {study / 'report.md'} and {study / 'report.html'}\n"
    page = (study / "report.html").read_text()
    assert page.count("<img") == 3 and "5 trials; expected test_nll of the validation-best of n trials" in page
    curve = pd.read_csv(study / "expected_best.csv")
    assert list(curve["n"]) == [1, 2, 3, 4, 5] and (curve["low"] <= curve["high"]).all()


def test_report_of_a_folder_that_is_no_study_is_one_line(tmp_path, capsys):
    assert main(["report", "table7", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"seqrep: error: no {tmp_path / 'table7.json'}: rebuild the table first with "
                                       f"`seqrep reproduce table7 --out {tmp_path}`\n")


@pytest.mark.parametrize("target", ["folder", "folder/missing"])
def test_report_of_a_path_that_is_no_study_says_so(tmp_path, capsys, target):
    (tmp_path / "folder").mkdir()
    assert main(["report", str(tmp_path / target)]) == 2
    assert capsys.readouterr().err == (f"seqrep: error: {tmp_path / target} is not a seqrep study (no study.json); give "
                                       "a study folder that `seqrep search` wrote, or a table that `seqrep reproduce` "
                                       "rebuilt (e.g. table7)\n")


def test_the_html_table_shows_numbers_as_the_markdown_does_and_words_as_they_are():
    # a table's "ours" column holds numbers and words (a pooling function), so the CSV reads it back as text
    assert report._number_or_text("0.02447552447552448") == "0.0245"
    assert report._number_or_text("mean/stochastic/sum") == "mean/stochastic/sum"
    assert report._number_or_text(float("nan")) == "" and report._number_or_text(None) == ""


def keep_embeddings(folder: Path, seed: int = 0, figures: bool = False) -> None:
    """What a sequence-reduction trial keeps for Figure 9 (`trainables.kit.tsne.save_embeddings`),
    and with `figures` Figures 11 and 12's arrays (`trainables.kit.reduction_figures`)."""
    from trainables.kit.reduction_figures import figure_inputs

    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], 20)
    e = (rng.normal(size=(60, 4)) + y[:, None]).astype(np.float32)
    raw = [rng.normal(size=(int(t), 2)).astype(np.float32) for t in rng.integers(10, 30, size=60)]
    weights = torch.tensor(rng.normal(size=(2, 4)), dtype=torch.float32)
    kept = figure_inputs(lambda x: torch.tanh(x @ weights).mean(0), e, [torch.tensor(r) for r in raw], raw, seed) \
        if figures else {}
    folder.mkdir(parents=True)
    np.savez_compressed(folder / report.EMBEDDINGS_FILE, e=e, y=y, classes=np.array(["a", "b", "c"]),
                        title=np.array("RI on test"), seed=np.array(seed), **kept)


@pytest.mark.parametrize("as_member", [False, True])
def test_the_selected_trials_embeddings_become_its_tsne_map_and_no_other_trials(tmp_path, as_member):
    study = make_study(tmp_path, "one", 3, n=5)
    trials = summary.read(study)
    best, worst = trials.sort_values("valid_nll")["trial_id"].iloc[[0, -1]]
    if as_member:  # a cohort member's files live in its subfolder of the cohort's last checkpoint
        frame = trials.assign(cohort=np.where(trials["trial_id"] == best, "c0", None),
                              trial_id=trials["trial_id"].where(trials["trial_id"] != best, "c0-m1"))
        frame.to_parquet(study / studydir.SUMMARY_FILE)
        keep_embeddings(study / "ray" / "c0" / "checkpoint_000002" / "m1")
        (study / "ray" / "c0" / "checkpoint_000001").mkdir()  # an older checkpoint is not read
        best = "c0-m1"
    else:
        keep_embeddings(study / "ray" / best / "checkpoint_000003")
    keep_embeddings(study / "ray" / worst / "checkpoint_000003", seed=1)
    record = studydir.read_record(study)
    selected = report.selected_embeddings(study, record, summary.read(study))
    assert selected[0] == best and selected[1].parent.name == ("m1" if as_member else "checkpoint_000003")
    assert main(["report", str(study)]) == 0
    page = (study / "report.html").read_text()
    assert page.count("<img") == 4 and page.count('<img alt="one-tsne"') == 1
    assert (study / "figures" / "one-tsne.png").stat().st_size > 5000


def draw_png(path: Path, width_px: int) -> None:
    """A figure as a trial draws one (`plot_predictive`, `storn.plot_channels`), `width_px` wide."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plt.figure(figsize=(width_px / 100, 3), dpi=100)
    fig.gca().plot([0, 1], [1, 0])
    fig.savefig(path, dpi=100)
    plt.close(fig)


@pytest.mark.parametrize("as_member", [False, True])
def test_the_section_names_the_selected_trial_and_shows_the_figures_it_drew(tmp_path, as_member):
    study = make_study(tmp_path, "one", 3, n=5)
    trials = summary.read(study)
    best, worst = trials.sort_values("valid_nll")["trial_id"].iloc[[0, -1]]
    row = trials.set_index("trial_id").loc[best]
    folder = study / "ray" / best / "checkpoint_000003"
    if as_member:
        trials.assign(cohort=np.where(trials["trial_id"] == best, "c0", None),
                      trial_id=trials["trial_id"].where(trials["trial_id"] != best, "c0-m2")
                      ).to_parquet(study / studydir.SUMMARY_FILE)
        folder, best = study / "ray" / "c0" / "checkpoint_000001" / "m2", "c0-m2"
    draw_png(folder / "predictive.png", 640)
    draw_png(folder / "samples.png", 1400)  # 48 channels: a row of its own on the page
    draw_png(study / "ray" / worst / "checkpoint_000003" / "predictive.png", 640)  # not the table's pick
    assert main(["report", str(study)]) == 0
    page, md = (study / "report.html").read_text(), (study / "report.md").read_text()
    assert page.count("<img") == 5 and page.count('class="wide"') == 2  # the scatter row and samples.png
    assert page.count('<img alt="one-trial-predictive"') == 1 and page.count('<img alt="one-trial-samples"') == 1
    assert "![one-trial-samples](figures/one-trial-samples.png)" in md
    assert (study / "figures" / "one-trial-predictive.png").read_bytes() == (folder / "predictive.png").read_bytes()
    line = (f"- selected trial {best} (valid_nll {row['valid_nll']:.4g}; hidden_layers=1, "
            f"transfer={row['config.transfer']}, hidden_units={row['config.hidden_units']}, batch_size=10, "
            f"step_rate={row['config.step_rate']:.4g}, decay=0.9, momentum=0.5)")
    assert line in md.splitlines()


def test_a_selected_trial_without_a_kept_folder_is_named_and_draws_nothing(tmp_path):
    study = make_study(tmp_path, "one", 3, n=4)
    assert main(["report", str(study)]) == 0
    md = (study / "report.md").read_text()
    assert md.count("- selected trial t") == 1 and "-trial-" not in md and md.count("![") == 3


def test_the_selected_trials_jacobians_and_neighbours_are_drawn_where_it_kept_them(tmp_path):
    """Figures 11 and 12 beside Figure 9; a trial that kept only its embeddings (before they
    existed) gets the t-SNE map alone, as the test above shows."""
    study = make_study(tmp_path, "one", 3, n=5)
    best = summary.read(study).sort_values("valid_nll")["trial_id"].iloc[0]
    keep_embeddings(study / "ray" / best / "checkpoint_000003", figures=True)
    assert main(["report", str(study)]) == 0
    page = (study / "report.html").read_text()
    assert page.count("<img") == 6
    assert [page.count(f'<img alt="one-{f}"') for f in ("tsne", "jacobian", "neighbours")] == [1, 1, 1]
    kept = np.load(study / "ray" / best / "checkpoint_000003" / report.EMBEDDINGS_FILE)
    assert kept["jac"].shape == (4, len(kept["jac_sample"])) and kept["nn_index"].shape == (2, 6)
    for figure in ("jacobian", "neighbours"):
        assert (study / "figures" / f"one-{figure}.png").stat().st_size > 10000


def test_figure_11_draws_a_many_featured_sample_as_an_image_and_old_files_draw_nothing(tmp_path):
    """TIDIGITS' 13 MFCCs (Figure 11's own sample) as an image above the Jacobians, not 13 lines."""
    rng = np.random.default_rng(0)
    kept = dict(e=rng.normal(size=(8, 4)), y=np.arange(8) % 2, classes=np.array(["0", "1"]), jac_index=np.array(3),
                jac_sample=rng.normal(size=(40, 13)), jac_features=np.array([2, 0]), jac=rng.random((2, 40)))
    np.savez(tmp_path / "kept.npz", **kept)
    drawn = figures.sequential_jacobian(tmp_path / "kept.npz", "s", "t", tmp_path / "jac.png")
    from matplotlib.image import imread
    assert drawn == tmp_path / "jac.png" and imread(drawn).shape[:2] == (int(1.1 * 3 * 90 + 0.8 * 90), 540)
    assert figures.neighbours(tmp_path / "kept.npz", "s", "t", tmp_path / "nn.png") is None  # no nn_* arrays
    assert not (tmp_path / "nn.png").exists()


def test_the_tsne_map_is_fitted_on_one_thread(tmp_path, monkeypatch):
    """The report's t-SNE runs while other studies train: its OpenMP gradient gets one thread."""
    from sklearn.manifold import TSNE
    from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

    seen = []
    fit = TSNE.fit_transform
    monkeypatch.setattr(TSNE, "fit_transform", lambda self, x, *a, **k: (seen.append(_openmp_effective_n_threads()),
                                                                            fit(self, x, *a, **k))[1])
    keep_embeddings(tmp_path / "kept")
    torch.set_num_threads(2)  # what the driver has on two cores (the tests' fixture gives one, and restores it)
    assert figures.tsne(tmp_path / "kept" / report.EMBEDDINGS_FILE, "s", "t", tmp_path / "map.png") is not None
    assert seen == [1]


def test_a_study_without_kept_embeddings_has_no_tsne_map(tmp_path):
    study = make_study(tmp_path, "one", 3, n=5)
    assert report.selected_embeddings(study, studydir.read_record(study), summary.read(study)) is None


def test_a_grid_studys_report_shows_its_test_metrics_per_value_and_no_best_of_n(tmp_path):
    d = tmp_path / "grid"
    (d / "ray").mkdir(parents=True)
    studydir.write_record(d, {"name": "grid", "space": "table8-fawn-vb", "space_path": "", "method": "fawn_vb",
                              "dataset": "uci-boston", "seed": 0, "metric": "valid_loss", "mode": "min", "cpus_per_trial": 1.0,
                              "gpus_per_trial": 0.0,
                              "command": "seqrep test", "git_commit": "abc"})
    for split in range(4):
        t = d / "ray" / f"t{split}"
        t.mkdir()
        (t / "params.json").write_text(json.dumps({"split": split, "hidden_units": 50}))
        final = {"epoch": 3, "valid_loss": 1.0 + split, "test_rmse": 3.0 + split, "test_nll": 2.5, "best_epoch": 3,
                 "seqrep_status": "completed", "history": []}
        (t / "result.json").write_text(json.dumps(final) + "\n")
    summary.write(d)
    assert report.grid_keys(studydir.read_record(d)) == ["split"]
    section = report.study_section(d, tmp_path, {}, ("test_rmse", "test_nll"))
    assert [p.name for p in section["images"]] == ["grid-per-split.png"] and section["curve"] is None
    assert not (d / report.EXPECTED_FILE).exists()  # the splits are no random search: no best of n
    assert main(["report", str(d)]) == 0
    page = (d / "report.html").read_text()
    assert "4 trials; a grid over split: one trial per value, not a random search" in page
    assert page.count("<img") == 1
