"""Prepared folders straight into train / evaluate / predict: one folder or several at once."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from lesionseg.cli.main import build_parser, main
from lesionseg.data.pairing import DataError, collect_dir_pairs
from lesionseg.data.prepare import Settings, prepare
from lesionseg.training import build_config, load_yaml
from official_layouts import LAYOUTS

TINY = json.dumps({"encoder_channels": [8, 16, 32, 64], "decoder_channels": [32, 16, 8]})
BASE = ["--img_size", "64", "--batch_size", "4", "--model", TINY, "--seed", "7", "--workers", "0", "--epochs", "1",
        "--max-steps-per-epoch", "1"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[str]]]:
    """ISIC 2018 (training + validation) and HAM10000, each prepared at 64 px: {name: (folder, ids)}."""
    root = tmp_path_factory.mktemp("prepared")
    out = {}
    for name in ("isic2018", "ham10000"):
        sources, ids = LAYOUTS[name](root / f"{name}_download")
        assert prepare(sources, root / name, Settings(64, "crop")).problems == []
        out[name] = (root / name, ids)
    return out


@pytest.mark.slow  # two short training runs
def test_train_on_two_prepared_folders_then_evaluate_and_predict(prepared, tmp_path: Path, capsys) -> None:
    (a, ids_a), (b, ids_b) = prepared["isic2018"], prepared["ham10000"]
    out = tmp_path / "runs"
    assert main(["train", "--data-dir", str(a), str(b), "--output-dir", str(out), "--run-name", "ab", *BASE]) == 0
    run = out / "ab"
    split = json.loads((run / "split.json").read_text())
    assert sorted(i for part in split.values() for i in part) == sorted(ids_a + ids_b)
    assert all(split.values())  # train, val and test all drawn from the union
    assert yaml.safe_load((run / "config.yaml").read_text())["data_dir"] == [str(a.resolve()), str(b.resolve())]
    assert (run / "visualizations/test_evaluation/test_metrics.json").is_file()
    # the folders in the other order give the same split (ids are sorted before the seeded shuffle)
    assert main(["train", "--data-dir", str(b), "--data-dir", str(a), "--output-dir", str(out), "--run-name", "ba",
                 *BASE]) == 0
    assert json.loads((out / "ba/split.json").read_text()) == split
    weights = run / "models/best_model"
    capsys.readouterr()
    assert main(["evaluate", "--weights", str(weights), "--data-dir", str(a), "--json", str(tmp_path / "a.json")]) == 0
    assert json.loads((tmp_path / "a.json").read_text())["n_images"] == len(ids_a)
    assert main(["evaluate", "--weights", str(weights), "--data-dir", str(a), str(b),
                 "--ids", str(run / "split.json"), "--json", str(tmp_path / "test.json")]) == 0
    assert sorted(r["id"] for r in json.loads((tmp_path / "test.json").read_text())["per_image"]) == \
        sorted(split["test"])
    assert main(["predict", "--weights", str(weights), "--input_dir", str(b), "--output_dir", str(tmp_path / "p"),
                 "--outputs", "mask"]) == 0
    assert sorted(p.name for p in (tmp_path / "p").glob("*_mask.png")) == sorted(f"{i}_mask.png" for i in ids_b)


def test_one_folder_stays_a_string_and_several_come_from_flags_or_yaml(prepared, tmp_path: Path) -> None:
    (a, _), (b, _) = prepared["isic2018"], prepared["ham10000"]
    parser = build_parser()
    for argv in (["train", "--data-dir", str(a), str(b)], ["train", "--data_dir", str(a), "--data-dir", str(b)]):
        cfg = build_config({}, vars(parser.parse_args(argv)))
        assert cfg.data_dirs == [str(a), str(b)] and cfg.data_dir == [str(a), str(b)]
    one = build_config({}, vars(parser.parse_args(["train", "--data-dir", str(a)])))
    assert one.data_dir == str(a) and one.to_dict()["data_dir"] == str(a)  # config.yaml as before
    (tmp_path / "c.yaml").write_text(f"data_dir: [{a}, {b}]\n")
    assert build_config(load_yaml(tmp_path / "c.yaml"), {}).data_dirs == [str(a), str(b)]
    (tmp_path / "c.yaml").write_text(f"data_dir: {a}\n")
    assert build_config(load_yaml(tmp_path / "c.yaml"), {}).data_dir == str(a)


def test_an_id_in_two_folders_is_refused_with_one_line(prepared, tmp_path: Path, capsys) -> None:
    a, ids = prepared["isic2018"]
    copy = shutil.copytree(a, tmp_path / "copy")
    with pytest.raises(DataError, match=f"{len(ids)} id\\(s\\) are in more than one --data-dir folder"):
        collect_dir_pairs([a, copy])
    code = main(["train", "--data-dir", str(a), str(copy), "--output-dir", str(tmp_path / "o"), *BASE])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(copy) in err[0] and "lesionseg data prepare --source" in err[0]


def test_model_flag_merges_over_the_recipes_model(tmp_path: Path) -> None:
    # one flag changes one constructor argument; the recipe's encoder and the rest stay
    (tmp_path / "r.yaml").write_text("model:\n  encoder_name: mobilenet_v2\n  full_resolution_stage: false\n"
                                     "  decoder_channels: [128, 64, 32, 24]\n")
    args = vars(build_parser().parse_args(["train", "--model", '{"decoder_channels": [256, 128, 64, 24]}']))
    cfg = build_config(load_yaml(tmp_path / "r.yaml"), args)
    assert cfg.model == {"encoder_name": "mobilenet_v2", "full_resolution_stage": False,
                         "decoder_channels": [256, 128, 64, 24]}
    assert build_config(load_yaml(tmp_path / "r.yaml"), {}).model["decoder_channels"] == [128, 64, 32, 24]
    assert build_config({}, args).model == {"decoder_channels": [256, 128, 64, 24]}
