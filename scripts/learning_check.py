"""Does a recipe learn real photographs? Train it on each real-photo set and seed, tabulate, draw.

    python scripts/learning_check.py --out runs/learning_check            # the defaults, seeds 0-2
    python scripts/learning_check.py --out runs/adam --train_flags=--optimizer=adam,--learning_rate=5e-4
    python scripts/learning_check.py --out runs/tuned --train_flags=--weights=pre.keras --baseline runs/learning_check/results.json

Each run is `scripts/train.py --dataset folder:<set> --image_size 67 --epochs 15 --batch_size 32
--seed S` (plus --train_flags) in its own process, on the sets of keras_alexnet.photos (written
first if missing). Prints the held-out top-1 of every run and the worst per set, writes
results.json and curves.png (held-out top-1 per epoch, one panel per set) into --out.
"""

import json
import os
import subprocess
import sys
import time

from absl import flags

import _cli as cli

flags.DEFINE_string("out", None, "Folder for the runs, results.json and curves.png.", required=True)
flags.DEFINE_string("photo_dir", None, "Where the photo sets are (written if missing; default: <out>/photo_sets).")
flags.DEFINE_list("sets", None, "Photo sets to train on (default: all of keras_alexnet.photos.PHOTO_SETS).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to train with.")
flags.DEFINE_integer("epochs", 15, "Epochs per run.")
flags.DEFINE_integer("batch_size", 32, "Batch size per run.")
flags.DEFINE_integer("image_size", 67, "Input size per run.")
flags.DEFINE_list("train_flags", [], "Extra scripts/train.py flags for every run, e.g. --optimizer=sgd,--learning_rate=0.01.")
flags.DEFINE_string("label", None, "Title of the figure (default: the train flags).")
flags.DEFINE_string("baseline", None, "results.json of an earlier check on the same sets and seeds, drawn dashed "
                    "beside these runs (e.g. from scratch against --train_flags=--weights=FILE).")

FLAGS = flags.FLAGS
_TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")


def _train(photo_dir, name, seed, model_dir):
    """One training run in its own process; returns (exit code, seconds, history)."""
    # One checkpoint a run (the last, about 160 MB at 67 px, which evaluate.py reads): three kept
    # over dozens of runs filled a disk.
    command = [sys.executable, _TRAIN, f"--dataset=folder:{os.path.join(photo_dir, name)}", f"--seed={seed}",
               f"--image_size={FLAGS.image_size}", f"--epochs={FLAGS.epochs}", f"--batch_size={FLAGS.batch_size}",
               f"--model_dir={model_dir}", "--export_dir=", "--keep_checkpoints=1", *FLAGS.train_flags]
    start = time.perf_counter()
    with open(model_dir + ".log", "w", encoding="utf-8") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    from keras_alexnet.figures import read_history

    history = read_history(model_dir) if os.path.exists(os.path.join(model_dir, "history.jsonl")) else []
    return code, seconds, history


def main(argv):
    from keras_alexnet import figures, photos
    from keras_alexnet.run_config import check_writable

    names = photos.set_names(FLAGS.sets)
    photo_dir = FLAGS.photo_dir or os.path.join(FLAGS.out, "photo_sets")
    check_writable(FLAGS.out, "--out")
    for name in names:
        if not os.path.isdir(os.path.join(photo_dir, name)):
            photos.write_photo_set(os.path.join(photo_dir, name), photos.PHOTO_SETS[name])
    results = []
    for name in names:
        for seed in FLAGS.seeds:
            model_dir = os.path.join(FLAGS.out, f"{name}_seed{seed}")
            if os.path.exists(model_dir):
                cli.fail(f"{model_dir} exists: choose a new --out (runs are not resumed here).")
            code, seconds, history = _train(photo_dir, name, int(seed), model_dir)
            final = history[-1]["val_top1"] if history else float("nan")
            results.append({"set": name, "seed": int(seed), "num_classes": len(photos.PHOTO_SETS[name]), "exit_code": code, "seconds": round(seconds, 1),
                            "val_top1": [h["val_top1"] for h in history], "final_val_top1": final})
            print(f"{name:16s} seed {seed}: held-out top-1 {final:.3f} after {len(history)} epochs, "
                  f"exit {code}, {seconds:.0f} s", flush=True)
    with open(os.path.join(FLAGS.out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"train_flags": FLAGS.train_flags, "runs": results}, f, indent=1)
    for name in names:
        finals = [r["final_val_top1"] for r in results if r["set"] == name]
        print(f"{name:16s} worst {min(finals):.3f}  mean {sum(finals) / len(finals):.3f}")
    title = FLAGS.label or ("defaults" if not FLAGS.train_flags else " ".join(FLAGS.train_flags))
    baseline = None
    if FLAGS.baseline:
        with open(FLAGS.baseline, encoding="utf-8") as f:
            baseline = json.load(f)["runs"]
    figures.plot_learning_check(results, os.path.join(FLAGS.out, "curves.png"), title=title, baseline=baseline,
                                labels=("", "baseline ") if baseline else ("", ""))
    print(f"wrote {os.path.join(FLAGS.out, 'results.json')} and curves.png")


if __name__ == "__main__":
    cli.run(main)
