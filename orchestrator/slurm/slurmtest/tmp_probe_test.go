package slurmtest

import (
	"context"
	"os/exec"
	"testing"
)

func TestTmpProbe(t *testing.T) {
	cl := Start(t, Options{})
	ctx := context.Background()
	_ = ctx
	script := `
set -x
sbatch --parsable --gres=gpu:a100:1 --output=/dev/null --wrap 'exit 3'
sbatch --parsable --gres=gpu:a100:1 --output=/dev/null --wrap 'sleep 100'
sbatch --parsable --gres=gpu:a100:2 --output=/dev/null --wrap 'sleep 100'
sbatch --parsable --gres=gpu:a100:1 --output=/dev/null --time=0:01 --wrap 'sleep 100'
sbatch --parsable --gres=gpu:a100:1 --mem=10 --output=/dev/null --wrap 'sleep 100'
sbatch --parsable --gres=gpu:h100:1 --output=/dev/null --wrap 'sleep 100'
sbatch --parsable --gres=gpu:A100:1 --output=/dev/null --wrap 'sleep 100'
sbatch --parsable --gres=gpu:a100:1 --nodes=2 --output=/dev/null --wrap 'sleep 100'
sleep 2
squeue -h -t all -O 'JobID:|,State:|,ExitCode:|,Reason:|,Name:|'
squeue -h -t all -j 1,2,99 -O 'JobID:|,State:|'; echo rc=$?
squeue -h -j 99 -O 'JobID:|,State:|'; echo rc=$?
scancel 2
squeue -h -j 2 -o '%T'
sleep 1
squeue -h -t all -O 'JobID:|,State:|,ExitCode:|,Reason:|,Name:|,TimeUsed:|,NodeList:|,tres-per-node:|,UserName:|,Partition:|,NumNodes:|,SubmitTime:|,StartTime:|,EndTime:|'
scontrol show job -o 1
scontrol show job -o 99; echo rc=$?
sinfo -N -h -O 'NodeList:|,Partition:|,StateLong:|,Gres:|,GresUsed:|,CPUsState:|,Memory:|,AllocMem:|,Reason:|'
sinfo -h -O 'Partition:|,Available:|,Time:|,Nodes:|,NodeList:|'
sbatch --version
sacct -n -P -j 1 -o JobIDRaw,State,ExitCode; echo rc=$?
`
	out, _ := func() *exec.Cmd { c := cl.Command(ctx, "bash", "-c", script); return c }().CombinedOutput()
	_ = cl
	t.Logf("%s", out)
}
