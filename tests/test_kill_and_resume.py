"""Real training processes killed at several points and resumed with ``nnUNetv2_train ... --c`` (issue: reliability).

One run of a short PICK schedule (5 epochs: 2 warm-up, 3 PICK; a checkpoint after every epoch) is killed four times
with SIGKILL to its whole process group (the main process and nnU-Net's data-augmentation workers, as a cluster
scheduler kills a job), each time at a different point:

1. at the end of warm-up epoch 0, after its checkpoint was written;
2. at the end of epoch 2, the first PICK epoch (labeled + unlabeled);
3. half-way through writing the checkpoint of epoch 3 (a truncated file lies on disk when the process dies);
4. during the final validation, after ``checkpoint_final.pth`` was written.

After each kill the test reads the checkpoint that ``--c`` will load and resumes. The resumed process records the
state it starts from (epoch, phase, optimizer momentum, loss curves); it must equal the checkpoint's. The finished
run must have exactly one entry per epoch in every curve, the warm-up pattern of an uninterrupted run, and nnU-Net's
validation summary.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import textwrap

import numpy as np
import pytest
import torch
from helpers import DATASET_ID, DATASET_NAME, base_env, command

TRAINER = "nnUNetTrainerPICK_killTest"
CONFIGURATION = "2d_kill"
EPOCHS, WARMUP = 5, 2

pytestmark = pytest.mark.slow

# the kill points live in the test's own trainer subclass (a user's nnUNet_extTrainer folder); PICK_TEST_KILL picks
# one per process. os.killpg takes down the whole process group at once, like a job scheduler.
KILL_TRAINER = textwrap.dedent(f"""
    import json
    import os
    import signal
    from os.path import join

    import numpy as np
    import torch
    from nnunet_pick import nnUNetTrainerPICK

    KILL = os.environ.get("PICK_TEST_KILL", "")


    def die():
        os.killpg(os.getpgid(0), signal.SIGKILL)


    class {TRAINER}(nnUNetTrainerPICK):
        def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
            super().__init__(plans, configuration, fold, dataset_json, device)
            self.num_epochs = {EPOCHS}
            self.num_warmup_epochs = {WARMUP}
            self.num_iterations_per_epoch = 3
            self.num_val_iterations_per_epoch = 1
            self.save_every = 1
            self.mim_figure_every = 100

        def on_train_start(self):
            super().on_train_start()
            state = self.optimizer.state_dict()["state"]
            record = {{
                "epoch": self.current_epoch,
                "warmup": self.is_warmup_epoch(),
                "momentum_sum": sum(float(s["momentum_buffer"].double().sum()) for s in state.values()
                                    if s.get("momentum_buffer") is not None),
                "curves": {{k: np.asarray(v, dtype=float).tolist()
                           for k, v in self.logger.local_logger.my_fantastic_logging.items()}},
            }}
            with open(join(self.output_folder, "resume_states.jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\\n")

        def on_epoch_end(self):
            epoch = self.current_epoch
            super().on_epoch_end()
            if KILL == f"epoch_end:{{epoch}}":
                die()

        def save_checkpoint(self, filename):
            if KILL == f"checkpoint_write:{{self.current_epoch}}" and filename.endswith("checkpoint_latest.pth"):
                real_save = torch.save

                def save_half_then_die(obj, path, *args, **kwargs):
                    real_save(obj, path, *args, **kwargs)
                    size = os.path.getsize(path)
                    with open(path, "r+b") as f:
                        f.truncate(size // 2)
                    die()

                torch.save = save_half_then_die
            super().save_checkpoint(filename)

        def perform_actual_validation(self, save_probabilities=False):
            if KILL == "validation":
                die()
            super().perform_actual_validation(save_probabilities)
""")


def train(env: dict, kill: str | None, log, cont: bool) -> int:
    """Run nnUNetv2_train in its own process group; returns the exit status (-9 when the kill point was hit)."""
    args = [command("nnUNetv2_train"), str(DATASET_ID), CONFIGURATION, "0", "-tr", TRAINER, "-device", "cpu"]
    if cont:
        args.append("--c")
    env = dict(env, PICK_TEST_KILL=kill or "")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return proc.wait(timeout=1200)
    finally:
        with contextlib.suppress(ProcessLookupError):  # leave no data-augmentation worker behind
            os.killpg(proc.pid, signal.SIGKILL)


def checkpoint_state(path) -> dict:
    """What ``--c`` will resume from, read the way nnU-Net's load_checkpoint reads it."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt["optimizer_state"]["state"]
    return {"epoch": ckpt["current_epoch"],
            "momentum_sum": sum(float(s["momentum_buffer"].double().sum()) for s in state.values()
                                if s.get("momentum_buffer") is not None),
            "curves": {k: np.asarray(v, dtype=float).tolist() for k, v in ckpt["logging"].items()}}


def assert_same_curves(resumed: dict, saved: dict, what: str) -> None:
    """Every logged curve equal, value for value (NaN where nnU-Net logs NaN counts as equal)."""
    assert resumed.keys() == saved.keys(), what
    for key in saved:
        np.testing.assert_array_equal(np.asarray(resumed[key]), np.asarray(saved[key]), err_msg=f"{what}: {key}")


def test_training_killed_at_four_points_resumes_with_the_same_state(hippocampus, nnunet_dirs, tmp_path):
    ext = tmp_path / "ext"
    (ext / "kill_trainers").mkdir(parents=True)
    (ext / "kill_trainers" / "__init__.py").write_text("", encoding="utf-8")
    (ext / "kill_trainers" / "kill.py").write_text(KILL_TRAINER, encoding="utf-8")
    plans_file = hippocampus / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text(encoding="utf-8"))
    plans["configurations"][CONFIGURATION] = {"inherits_from": "2d", "batch_size": 4}
    plans_file.write_text(json.dumps(plans, indent=2), encoding="utf-8")
    env = base_env(nnunet_dirs, nnUNet_n_proc_DA="1", nnUNet_extTrainer=str(ext))
    fold = nnunet_dirs["nnUNet_results"] / DATASET_NAME / f"{TRAINER}__nnUNetPlans__{CONFIGURATION}" / "fold_0"
    latest, final = fold / "checkpoint_latest.pth", fold / "checkpoint_final.pth"

    # (kill point, checkpoint --c loads afterwards, epoch it resumes at)
    kills = [("epoch_end:0", latest, 1), ("epoch_end:2", latest, 3), ("checkpoint_write:3", latest, 3),
             ("validation", final, EPOCHS)]
    expected_states = []
    with open(tmp_path / "train.log", "ab") as log:
        for i, (kill, resume_from, resume_epoch) in enumerate(kills):
            status = train(env, kill, log, cont=i > 0)
            log.flush()
            assert status == -signal.SIGKILL, f"kill point {kill} not reached (exit {status}); see {log.name}"
            if kill.startswith("checkpoint_write"):
                partial = fold / "checkpoint_latest.pth.partial"
                assert partial.is_file(), "the kill should leave the half-written checkpoint behind"
                with pytest.raises(RuntimeError, match="zip archive"):  # really truncated: torch cannot read it
                    torch.load(partial, map_location="cpu", weights_only=False)
            state = checkpoint_state(resume_from)
            assert state["epoch"] == resume_epoch, kill
            expected_states.append(state)
        assert train(env, None, log, cont=True) == 0, f"final resume failed; see {log.name}"

    resumed = [json.loads(line) for line in (fold / "resume_states.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["epoch"] for r in resumed] == [0, 1, 3, 3, EPOCHS]  # the first run, then one line per resume
    for record, state, (kill, _, epoch) in zip(resumed[1:], expected_states, kills, strict=True):
        assert record["epoch"] == state["epoch"] == epoch, kill
        assert record["warmup"] == (epoch < WARMUP), kill  # same phase as an uninterrupted run at that epoch
        assert record["momentum_sum"] == pytest.approx(state["momentum_sum"], rel=1e-12, abs=1e-12), kill
        assert record["momentum_sum"] != 0.0, kill  # SGD momentum was restored, not reset
        assert_same_curves(record["curves"], state["curves"], kill)
        assert all(len(v) == epoch for v in record["curves"].values()), kill

    done = torch.load(final, map_location="cpu", weights_only=False)
    assert done["current_epoch"] == EPOCHS
    assert all(len(v) == EPOCHS for v in done["logging"].values())
    assert done["logging"]["warmup"] == [1.0] * WARMUP + [0.0] * (EPOCHS - WARMUP)
    # the curves of epochs finished before each kill are the ones the finished run reports
    finished = checkpoint_state(final)["curves"]
    for state in expected_states:
        assert_same_curves({k: v[:state["epoch"]] for k, v in finished.items()}, state["curves"], "finished run")
    assert not latest.exists()  # nnU-Net removes it once the final checkpoint is written
    assert (fold / "validation" / "summary.json").is_file()
