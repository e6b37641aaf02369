"""Acceptance check: does `tensorflow_datasets` read a mixed RLDS directory from `hma-generate`?

Run it with a Python that has tensorflow + tensorflow_datasets (it never imports hma):

    /tmp/scratch-tfds/bin/python experiments/generate_rlds_check.py /tmp/gen/lt_mixed

It opens the directory with `tfds.builder_from_directory`, iterates every split with
`as_dataset`, and counts episodes, steps and synthetic episodes (our provenance rides in
`episode_metadata/hma`, JSON); everything printed comes from TFDS's return values.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory")
    args = parser.parse_args()
    import tensorflow_datasets as tfds

    builder = tfds.builder_from_directory(args.directory)
    print(f"tensorflow_datasets {tfds.__version__}: {builder.info.name} {builder.info.version}")
    print("splits:", {k: v.num_examples for k, v in builder.info.splits.items()})
    counts: Counter = Counter()
    for split in builder.info.splits:
        for episode in tfds.as_numpy(builder.as_dataset(split=split)):
            meta = json.loads(episode["episode_metadata"]["hma"].decode())
            kind = "synthetic" if meta["meta"].get("synthetic") else "real"
            steps = list(episode["steps"])
            counts[(split, kind)] += 1
            counts[(split, kind, "steps")] += len(steps)
            if kind == "synthetic" and counts[(split, kind)] == 1:
                step = steps[0]
                print(
                    f"a synthetic {split} episode: {len(steps)} steps, rgb "
                    f"{step['observation']['rgb'].shape} {step['observation']['rgb'].dtype}, "
                    f"action {step['action']}, provenance seed {meta['meta']['seed']}, "
                    f"checkpoint {meta['meta']['checkpoint_fingerprint'][:12]}, prompt "
                    f"{meta['meta']['prompt_episode_id']}"
                )
    print("episodes:", {k: v for k, v in sorted(counts.items()) if len(k) == 2})
    print("steps:", {k[:2]: v for k, v in sorted(counts.items()) if len(k) == 3})
    return 0


if __name__ == "__main__":
    sys.exit(main())
