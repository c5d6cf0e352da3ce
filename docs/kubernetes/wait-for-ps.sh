#!/bin/sh
# dtrain-wait-for-ps COMMAND [ARG...]: waits until every ps host named in TF_CONFIG resolves, then
# runs COMMAND in its place (exec: it gets the pod's signals, SIGTERM included). For the tasks of a
# Kubeflow TFJob (docs/kubernetes/tfjob.yaml; the image installs it as /opt/dtrain/bin/dtrain-wait-for-ps).
#
# Why: the training operator names each task by a headless Service of its own
# (JOB-ps-0.NAMESPACE.svc:2222), whose DNS record exists only once that task's pod runs. dtrain
# resolves the ps hosts once, at start (a ps task to bind its address, a worker to connect), so a
# task that starts before a ps pod is up would stop at once with "cannot resolve host". Ports are
# not waited for: dtrain's tasks already wait for each other (--start-timeout).
#
# DTRAIN_WAIT_FOR_PS_TIMEOUT: seconds to wait in all (default 300). When a host still does not
# resolve then, COMMAND runs anyway and dtrain reports the host it cannot resolve.
set -eu
if [ "$#" -eq 0 ]; then
  echo "usage: dtrain-wait-for-ps COMMAND [ARG...]   (TF_CONFIG names the ps hosts)" >&2
  exit 2
fi
limit="${DTRAIN_WAIT_FOR_PS_TIMEOUT:-300}"
# The operator writes compact JSON: {"cluster":{"ps":["h:2222",...],...},"task":{...},...}.
hosts=$(printf '%s' "${TF_CONFIG:-}" | tr -d ' \t\r\n' |
  sed -n 's/.*"ps":\[\([^]]*\)\].*/\1/p' | tr ',' '\n' | tr -d '"' | sed 's/:[0-9]*$//' | sort -u)
start=$(date +%s)
for host in $hosts; do
  waited=no
  until timeout 10 getent ahostsv4 "$host" >/dev/null 2>&1; do
    if [ $(($(date +%s) - start)) -ge "$limit" ]; then
      echo "dtrain-wait-for-ps: ps host $host does not resolve after ${limit} s; starting anyway" >&2
      break
    fi
    if [ "$waited" = no ]; then
      echo "dtrain-wait-for-ps: waiting for ps host $host to resolve (its pod is not running yet?)" >&2
      waited=yes
    fi
    sleep 1
  done
done
exec "$@"
