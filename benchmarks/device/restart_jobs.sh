#!/usr/bin/env bash
# Stop the background jobs of gpu_window.sh and start JOBS again (its `start` phase: from a snapshot
# of the tree). Usage, as a device call from the repository root: JOBS="..." bash benchmarks/device/restart_jobs.sh
# Kills by session id, not `pkill -f`: the device tool's runner has this command's text in its own
# command line, and a pattern kill takes it down with the jobs.
mysid=$(ps -o sid= -p $$ | tr -d ' ')
ps -eo pid=,sid=,args= | awk -v s="$mysid" '$2!=s && /python3|gpu_window/ && !/restart_jobs/ {print $1}' | xargs -r kill
sleep 2
bash benchmarks/device/gpu_window.sh start
sleep 25; tail -5 /root/work/jobs.log
