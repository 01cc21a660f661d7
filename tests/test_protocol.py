"""A short CPU run with the authors' validation protocol (AUTHORS_PROTOCOL: their split, validation on freshly augmented
images, EMA of parameters only, fp32 evaluation, last batch kept) writes the authors' measures to metrics.json."""
import pytest
import json
from attnresnet.config import AUTHORS_PROTOCOL, make_config
from attnresnet.runs import read_history
from attnresnet.train import fit

@pytest.mark.training  # a 2-epoch run: the slow tier
def test_authors_protocol_run_writes_named_metrics(tmp_path, standin):
    run = tmp_path / "authors"
    # the stand-in's 300 training images: 270 train after the authors' split; batch 64 leaves a last batch of 14, kept
    c = make_config(data=str(standin), width=4, epochs=2, batch_size=64, lr=0.05, eval_batch_size=100, device="cpu",
                    progress=False, run_dir=str(run), **AUTHORS_PROTOCOL)
    m = fit(c)
    assert m == json.loads((run / "metrics.json").read_text())
    a = m["authors_measure"]
    assert a["authors_protocol"] and a["protocol_differences"] == [] and a["validation_images"] == "augmented afresh each epoch"
    assert a["final_epoch"] == 2 and a["last_10_n"] == 2
    ema = [row["val_acc_ema"] for row in read_history(run)]  # per epoch, on the freshly augmented validation images
    assert (a["best_epoch"], a["best_val_acc_ema"]) == (1 + ema.index(max(ema)), max(ema))
    assert a["best_val_acc_ema"] >= a["final_epoch_val_acc_ema"] and a["best_val_acc_ema"] >= a["last_10_mean_val_acc_ema"]
    assert m["validation_images"] == "augmented afresh each epoch"
    assert 0 <= m["clean_val_acc_chosen"] <= 1 and 0 <= m["test_acc_final_epoch"] <= 1 and m["final_epoch_weights"] == "ema"
    assert "paper_protocol" not in m
    cfg = json.loads((run / "config.json").read_text())
    n = cfg["splits"]["train"] + cfg["splits"]["val"]
    assert cfg["splits"]["val"] == n - int(0.9 * n)  # the authors' share: random_split into int(0.9 n) and the rest
    assert all(cfg["parameters"][k] == v for k, v in AUTHORS_PROTOCOL.items())
