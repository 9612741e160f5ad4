"""Multi-process training comes from Lightning's strategies: DDP on CPU with 2 processes (gloo) runs a few
steps, both ranks train on different shards, and weights (online and EMA) stay bitwise in sync."""

import subprocess
import sys
import textwrap

import pytest
import torch

SCRIPT = textwrap.dedent("""
    import sys
    import lightning as L
    import torch
    from polydiff.testing_data import MixtureDataModule
    from polydiff.training import DiffusionModule

    torch.set_num_threads(1)
    out = sys.argv[1]

    class Record(L.Callback):
        def __init__(self):
            self.batches, self.losses = [], []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.batches.append(batch["x"].clone())
            self.losses.append(float(outputs["loss"]))

    torch.manual_seed(0)
    dm = MixtureDataModule(n_train=64, n_val=16, batch_size=8, conditional=True)
    module = DiffusionModule(backbone={"class_path": "MLP", "init_args": {"dim": 2, "hidden": 16, "depth": 1,
                                                                           "num_classes": 9}},
                             num_classes=9, cond_drop_prob=0.2, ema_decay=0.9, lr=1e-2,
                             val_num_samples=0, final_num_samples=0)
    rec = Record()
    trainer = L.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_steps=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[rec])
    trainer.fit(module, dm)
    trainer.save_checkpoint(f"{out}/step3.ckpt")  # collective: every rank calls it, rank 0 writes
    result = {"rank": trainer.global_rank, "world": trainer.world_size, "step": trainer.global_step,
              "state": {k: v.clone() for k, v in module.state_dict().items()}, "batches": rec.batches,
              "losses": rec.losses}

    # resume on both ranks (rank 0 restores its generator; rank 1 re-seeds from seed, rank and step)
    rec2 = Record()
    trainer2 = L.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_steps=5, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, limit_val_batches=0, callbacks=[rec2])
    trainer2.fit(module, dm, ckpt_path=f"{out}/step3.ckpt", weights_only=True)
    result.update(resumed_step=trainer2.global_step, resumed_state=module.state_dict(), resumed_losses=rec2.losses)
    torch.save(result, f"{out}/rank{trainer.global_rank}.pt")
    """)


@pytest.mark.slow
def test_ddp_two_cpu_processes_stay_in_sync(tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert (r0["rank"], r1["rank"]) == (0, 1) and r0["world"] == r1["world"] == 2
    assert r0["step"] == r1["step"] == 3 and len(r0["batches"]) == len(r1["batches"]) == 3
    # each rank saw its own shard: no training example appears on both ranks
    x0 = torch.cat(r0["batches"])
    x1 = torch.cat(r1["batches"])
    assert not (x0[:, None, :] == x1[None, :, :]).all(-1).any()
    # gradients were all-reduced, so the weights (and hence the EMA weights) are identical on both ranks
    assert r0["state"].keys() == r1["state"].keys()
    for k in r0["state"]:
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert int(r0["state"]["ema.num_updates"]) == 3
    assert r0["losses"] != r1["losses"]  # different data and noise per rank
    # after resuming from the checkpoint both ranks continue in sync
    assert r0["resumed_step"] == r1["resumed_step"] == 5
    for k in r0["resumed_state"]:
        assert torch.equal(r0["resumed_state"][k], r1["resumed_state"][k]), k
    assert int(r0["resumed_state"]["ema.num_updates"]) == 5
    assert len(r0["resumed_losses"]) == 2 and r0["resumed_losses"] != r1["resumed_losses"]
