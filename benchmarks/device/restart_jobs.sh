#!/usr/bin/env bash
# Stop the background jobs of h100_window.sh and start JOBS again from a snapshot of the tree (a later
# call's tree sync then cannot change files under a starting job). Usage: JOBS="..." bash restart_jobs.sh
mysid=$(ps -o sid= -p $$ | tr -d ' ')
ps -eo pid=,sid=,args= | awk -v s="$mysid" '$2!=s && /python3|h100_window/ && !/restart_jobs/ {print $1}' | xargs -r kill
sleep 2
rm -rf /root/snap && cp -a "$PWD" /root/snap && mkdir -p /root/shared && cp -a ../shared/. /root/shared/
cd /root/snap && rm -f /root/work/finished.txt
(setsid nohup bash benchmarks/device/h100_window.sh jobs > /root/work/jobs2.log 2>&1 < /dev/null &)
sleep 25; cat /root/work/jobs2.log; tail -c 400 /root/work/sagan10.log
