#!/bin/sh
# tests/cli/slurm.sh - featcache under a real Slurm on localhost: the test
# starts munged, slurmctld and slurmd with a generated slurm.conf (all
# state in its temporary directory), submits `sbatch --array=0-3` of an
# extract (each task writes st-{rank}) and of a sweep, waits for both,
# compares them with one-process runs, and stops the daemons it started.
# Needs root (slurmd runs jobs as their user) and Debian's slurm-wlm and
# munge (tools/deps.sh installs them); skips without them. `make
# slurm-test` runs it alone.
NAME=slurm
. "$(dirname "$0")/lib.inc"

skip_all() {
	echo "ok - Slurm array jobs # SKIP $1"
	exit 0
}
for b in munged slurmctld slurmd sbatch squeue scontrol; do
	command -v $b >/dev/null 2>&1 || [ -x /usr/sbin/$b ] || skip_all "no $b (tools/deps.sh installs slurm-wlm and munge)"
done
[ "$(id -u)" -eq 0 ] || skip_all "slurmd must run as root"
PATH=$PATH:/usr/sbin
MODEL=${FC_TOP:?}/tests/fixtures/models/resnet18_narrow.onnx
IMG=$FC_TOOLS/tool_mkimage

# ---- the daemons, all state under $tmp ----
host=$(hostname -s)
mkdir -p munge state spool log
chown munge munge 2>/dev/null
dd if=/dev/urandom of=munge/key bs=1024 count=1 2>/dev/null
chown munge munge/key 2>/dev/null
chmod 400 munge/key
chmod 700 munge
MSOCK=$tmp/munge/sock
munged --key-file=munge/key --socket="$MSOCK" --pid-file="$tmp/munge/pid" --log-file="$tmp/munge/log" \
	--seed-file="$tmp/munge/seed" --force 2>munged.err || skip_all "munged does not start: $(head -c 200 munged.err)"
cpus=$(nproc)
port=$((20000 + $$ % 20000))
cat >slurm.conf <<EOF
ClusterName=fctest
SlurmctldHost=$host
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
AuthInfo=socket=$MSOCK
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
SchedulerType=sched/builtin
NodeName=$host CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$tmp/slurm.conf
stop_daemons() {
	[ -f "$tmp/slurmd.pid" ] && kill "$(cat "$tmp/slurmd.pid")" 2>/dev/null
	[ -f "$tmp/slurmctld.pid" ] && kill "$(cat "$tmp/slurmctld.pid")" 2>/dev/null
	[ -f "$tmp/munge/pid" ] && kill "$(cat "$tmp/munge/pid")" 2>/dev/null
	sleep 0.5
	cleanup
}
trap stop_daemons EXIT
slurmctld -f "$SLURM_CONF" 2>ctld.err || { cat ctld.err; skip_all "slurmctld does not start"; }
slurmd -f "$SLURM_CONF" 2>slurmd.err || { cat slurmd.err; skip_all "slurmd does not start"; }
n=0
until sinfo -h -o %T 2>/dev/null | grep -Eq '^idle'; do
	n=$((n + 1))
	if [ $n -gt 150 ]; then
		sed 's/^/# /' log/slurmctld.log | tail -20
		sed 's/^/# /' log/slurmd.log | tail -20
		fail "the node comes up"
		exit 1
	fi
	sleep 0.2
done
pass "munged, slurmctld and slurmd run on localhost"

# ---- an array job of extracts ----
for c in 0 1 2; do
	mkdir -p ds/c$c
	for i in 0 1 2 3 4 5 6 7 8 9; do
		"$IMG" ds/c$c/$i.png $((30 + i)) $((20 + c)) $((c * 10 + i))
	done
done
X="--model $MODEL --size 64 --batch 4 --threads 1"
"$F" extract --store whole --data ds $X -q --shard none >/dev/null
"$F" embed --store whole --out whole.npy --keys whole.keys -q >/dev/null

# wait_job ID: until the job (every array task) has left the queue.
wait_job() {
	n=0
	while [ -n "$(squeue -h -j "$1" 2>/dev/null)" ] && [ $n -lt 600 ]; do
		sleep 0.2
		n=$((n + 1))
	done
}
run sbatch --parsable --array=0-3 -c 1 -o "$tmp/ex-%a.out" --chdir="$tmp" \
	--wrap "'$F' extract --store 'st-{rank}' --data ds $X"
t "sbatch --array=0-3 of extract is accepted" 0
job=$(cat "$tmp/out")
wait_job "$job"
ok_if "every task says which worker of 4 it was" \
	sh -c 'for a in 0 1 2 3; do grep -q "^worker $a of 4 (SLURM_ARRAY_TASK_ID)" ex-$a.out || exit 1; done'
for a in 0 1 2 3; do
	"$F" embed --store st-$a --out p$a.npy --keys p$a.keys -q >/dev/null 2>&1
done
cat p0.keys p1.keys p2.keys p3.keys | LC_ALL=C sort >union.keys
ok_if "the four stores hold the dataset's keys once each" cmp -s union.keys whole.keys
if [ -n "$PY" ] && "$PY" -c 'import numpy' 2>/dev/null; then
	ok_if "with the one-process run's vectors, bit for bit" "$PY" -c '
import numpy as np
w = dict(zip(open("whole.keys").read().split("\n")[:-1], np.load("whole.npy")))
for a in range(4):
    for k, v in zip(open("p%d.keys" % a).read().split("\n")[:-1], np.load("p%d.npy" % a)):
        assert w[k].tobytes() == v.tobytes(), k
'
fi

"$F" merge --store merged -q st-0 st-1 st-2 st-3 >/dev/null
"$F" embed --store merged --out m.npy --keys m.keys -q >/dev/null 2>&1
ok_if "merged, the array's stores embed byte for byte as one extract" cmp -s m.npy whole.npy && cmp -s m.keys whole.keys

# srun's tasks are workers; a batch script's own process is not, though
# Slurm gives it SLURM_PROCID=0 and SLURM_NTASKS=2.
run srun -n 2 -c 1 --output="$tmp/sr-%t.out" --chdir="$tmp" "$F" extract --store 'sr-{rank}' --data ds $X
t "srun -n 2 runs two workers" 0
ok_if "each says which of 2 it is (SLURM_PROCID)" \
	sh -c 'grep -q "^worker 0 of 2 (SLURM_PROCID)" sr-0.out && grep -q "^worker 1 of 2 (SLURM_PROCID)" sr-1.out'
"$F" embed --store sr-0 --out s0.npy --keys s0.keys -q >/dev/null 2>&1
"$F" embed --store sr-1 --out s1.npy --keys s1.keys -q >/dev/null 2>&1
cat s0.keys s1.keys | LC_ALL=C sort >sr.keys
ok_if "their stores hold the dataset's keys once each" cmp -s sr.keys whole.keys
run sbatch --parsable -n 2 -c 1 -o "$tmp/b.out" --chdir="$tmp" --wrap "'$F' extract --store bst --data ds $X"
t "sbatch -n 2 of one extract is accepted" 0
wait_job "$(cat "$tmp/out")"
ok_if "the batch script is one process, not worker 0 of 2" sh -c '! grep -q "^worker" b.out && grep -q "^items: 30 seen" b.out'

# ---- an array job of a sweep ----
"$FC_TOOLS/tool_mkstore" --store ts --dim 16 --items 600 --classes 5 --noise 300 --mixed-splits --dtype f32 >/dev/null
spec="--grid lr=1e-3,3e-3 --grid output-dim=8,16 --epochs 2 --seed 2 -q"
"$F" sweep --store ts --out sw-full $spec --shard none >/dev/null
run sbatch --parsable --array=0-3 -c 1 -o "$tmp/sw-%a.out" --chdir="$tmp" \
	--wrap "OMP_NUM_THREADS=1 '$F' sweep --store ts --out sw $spec"
t "sbatch --array=0-3 of a sweep is accepted" 0
wait_job "$(cat "$tmp/out")"
ok_if "one results file per task" test "$(ls sw | grep -c '^results\.shard-[0-3]-of-4\.jsonl$')" -eq 4
ok_if "the last task wrote the combined results and the best head" grep -q '^best: ' sw-0.out sw-1.out sw-2.out sw-3.out
strip() { sed 's/"seconds":[0-9.e+-]*,\{0,1\}//g; s/"samples_per_s":[0-9.e+-]*,\{0,1\}//g' "$1"; }
strip sw-full/results.jsonl >a.res
strip sw/results.jsonl >b.res 2>/dev/null
same=1
for h in sw-full/c*.safetensors sw-full/best.safetensors; do cmp -s "$h" "sw/${h#sw-full/}" || same=0; done
ok_if "the array's sweep equals the one-process sweep: results and heads" [ $same -eq 1 ] && cmp -s a.res b.res

exit $((failures > 0))
