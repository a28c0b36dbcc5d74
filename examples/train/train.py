"""Train a tiny regression model: the skeleton of a real training script.

It shows what a job gets from sshq (its id, name and GPUs), trains, and
writes a checkpoint after every epoch to a directory that outlives the job,
so a cancelled or failed run resumes where it stopped when launched again
with the same --name.

With PyTorch it trains on the first GPU that sshq gave the job. Without
PyTorch (a node where `pip install torch` could not run, or `sshq demo`) it
says so and fits the same model in plain Python, so the example runs on any
node; set REQUIRE_TORCH=1 to make a missing torch an error instead.

Settings come from the environment (the task's envs, or --env on the
sshq launch command line): LR, EPOCHS, CHECKPOINT_DIR, REQUIRE_TORCH.
"""

import json
import os
import random
import sys


def env(name, default):
    value = os.environ.get(name, "")
    return value if value != "" else default


LR = float(env("LR", "0.1"))
EPOCHS = int(env("EPOCHS", "20"))
JOB_NAME = env("SSHQ_JOB_NAME", "local")
# Outside the job's workdir snapshot: the snapshot belongs to one job, the
# checkpoints to every run of this name.
CKPT_DIR = os.path.expanduser(env("CHECKPOINT_DIR", os.path.join("~", "checkpoints", JOB_NAME)))


def data(n=256, seed=0):
    """y = 3x + 2 plus noise: the same points for every run, so runs with
    different LRs are comparable."""
    rng = random.Random(seed)
    xs = [rng.uniform(-1, 1) for _ in range(n)]
    return xs, [3 * x + 2 + rng.gauss(0, 0.1) for x in xs]


def report(epoch, loss):
    print(f"epoch {epoch:3d}  loss {loss:.6f}", flush=True)


def resuming(path):
    if os.path.exists(path):
        print(f"resuming from {path}")
        return True
    return False


def save_atomic(write, path):
    """A job can be cancelled at any moment: never leave half a checkpoint."""
    tmp = path + ".tmp"
    write(tmp)
    os.replace(tmp, path)


def train_torch(torch):
    # sshq sets CUDA_VISIBLE_DEVICES to the leased GPUs, so cuda:0 is the
    # first of them. For all of them, launch with
    #   torchrun --standalone --nproc_per_node=$SSHQ_NUM_GPUS_PER_NODE train.py
    # and wrap the model in DistributedDataParallel.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        print(f"backend: torch {torch.__version__} on {', '.join(names)}")
    else:
        print(f"backend: torch {torch.__version__} on cpu (CUDA sees no GPU)")
    xs, ys = data()
    x = torch.tensor(xs, device=device).unsqueeze(1)
    y = torch.tensor(ys, device=device).unsqueeze(1)
    model = torch.nn.Linear(1, 1).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    path, start = os.path.join(CKPT_DIR, "last.pt"), 0
    if resuming(path):
        ckpt = torch.load(path, map_location=device)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        start = ckpt["epoch"]
    loss = None
    for epoch in range(start + 1, EPOCHS + 1):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        report(epoch, loss.item())
        state = {"epoch": epoch, "model": model.state_dict(), "opt": opt.state_dict()}
        save_atomic(lambda p: torch.save(state, p), path)
    return None if loss is None else loss.item()


def train_python():
    print("backend: pure Python (torch is not installed: see setup's output above)")
    xs, ys = data()
    w, b, start = 0.0, 0.0, 0
    path = os.path.join(CKPT_DIR, "last.json")
    if resuming(path):
        with open(path) as f:
            ckpt = json.load(f)
        w, b, start = ckpt["w"], ckpt["b"], ckpt["epoch"]
    loss = None
    n = len(xs)
    for epoch in range(start + 1, EPOCHS + 1):
        # Full-batch gradient descent on the mean squared error.
        errs = [w * x + b - y for x, y in zip(xs, ys)]
        loss = sum(e * e for e in errs) / n
        w -= LR * 2 * sum(e * x for e, x in zip(errs, xs)) / n
        b -= LR * 2 * sum(errs) / n
        report(epoch, loss)

        def write(p, epoch=epoch):
            with open(p, "w") as f:
                json.dump({"epoch": epoch, "w": w, "b": b}, f)

        save_atomic(write, path)
    print(f"model: y = {w:.3f}x + {b:.3f} (the data is y = 3x + 2 + noise)")
    return loss


def main():
    print(f"job {env('SSHQ_JOB_ID', '-')} ({JOB_NAME}): lr={LR} epochs={EPOCHS}")
    print(f"GPUs: CUDA_VISIBLE_DEVICES={env('CUDA_VISIBLE_DEVICES', '')} "
          f"({env('SSHQ_NUM_GPUS_PER_NODE', '0')} per node)")
    os.makedirs(CKPT_DIR, exist_ok=True)
    try:
        import torch
    except ImportError:
        torch = None
        if env("REQUIRE_TORCH", "0") == "1":
            sys.exit("torch is not installed and REQUIRE_TORCH=1: fix the install in setup (see its output above)")
    loss = train_torch(torch) if torch else train_python()
    if loss is None:
        print(f"nothing to do: the checkpoint in {CKPT_DIR} is already at epoch {EPOCHS}")
    else:
        print(f"final loss {loss:.6f} (lr={LR})")
    print(f"checkpoint: {CKPT_DIR}")


if __name__ == "__main__":
    main()
