#!/usr/bin/env bash
# A learning-rate sweep over examples/train: one detached job per value,
# placed by sshq wherever a GPU is free (the rest queue), then a wait for all
# of them and each one's final loss.
#
#   examples/sweep.sh                              # LR in 0.01 0.1 0.3
#   LRS="0.001 0.003" examples/sweep.sh --gpus A100:1 --env EPOCHS=50
#
# Arguments are passed to every `sshq launch`. Each job is named sweep-lr-<LR>,
# which names its checkpoint directory on the node (see train/task.yaml). The
# script exits with sshq wait's code: 0 when every job succeeded.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

ids=()
for lr in ${LRS:-0.01 0.1 0.3}; do
	# From train/, which its workdir (.) names, as SkyPilot resolves it.
	ids+=("$(cd "$here/train" && sshq launch -d --name "sweep-lr-$lr" --env "LR=$lr" "$@" task.yaml)")
done
echo "sweep: jobs ${ids[*]}; follow one with: sshq logs -f ${ids[0]}"

rc=0
sshq wait "${ids[@]}" || rc=$?
for id in "${ids[@]}"; do
	echo "#$id $(sshq logs "$id" | grep '^final loss' || echo 'no final loss: sshq logs '"$id")"
done
exit "$rc"
