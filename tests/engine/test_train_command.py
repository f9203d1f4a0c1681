"""`ftkd train` end to end on the tiny synthetic set (the data check gate is tested in test_commands.py): one step of the tiny SparseBEV, checkpoints,
final prediction + official metric (metrics.json); then `ftkd predict` on the final checkpoint."""

import json

from ftkd.cli import main


def run_cli(argv):
    try:
        main(argv)
    except SystemExit as exit_:
        return exit_.code
    return 0


def test_train_then_predict_on_the_tiny_synthetic_set(synth_root, tmp_path):
    out = tmp_path / "run"
    cheap = [
        "data.image_size=[32, 96]",  # the CPU is the limit here, not the model
        "train.epochs=0.05",  # one step (24 training samples at batch 2: ceil(0.05 * 12) = 1)
        "train.progress_bar=false",
        "train.device=cpu",
        "model.score_threshold=0.0",  # an untrained model scores below the default threshold
    ]
    code = run_cli(["train", "configs/sparsebev_tiny.yaml", "--dataroot", str(synth_root), "--skip-data-check", "--set",
                    f"train.out_dir={out}", *cheap])  # fmt: skip
    assert code == 0
    for name in ("config.json", "log.jsonl", "train.log", "metrics.json", "checkpoints/last.pt", "checkpoints/final.pt"):
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir())
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["nd_score"] <= 1.0
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records] == ["header", "train", "eval"]
    assert records[0]["config"]["data"]["dataroot"] == str(synth_root)

    results = tmp_path / "predicted.json"
    code = run_cli(["predict", str(out / "checkpoints" / "final.pt"), "--split", "synth_val", "--out", str(results),
                    "--device", "cpu"])  # fmt: skip
    assert code == 0
    predicted = json.loads(results.read_text())["results"]
    written_during_training = json.loads((out / "results_final.json").read_text())["results"]
    assert predicted.keys() == written_during_training.keys() and len(predicted) > 0
    for token, boxes in predicted.items():  # the reloaded checkpoint predicts what the trained model predicted
        assert [b["translation"] for b in boxes] == [b["translation"] for b in written_during_training[token]]
