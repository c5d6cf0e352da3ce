#!/usr/bin/env bash
# A simulated cluster on one machine, for the multi-node tests and scripts/bench-cluster.sh.
# Source it, then:
#   cluster_up N [RATE]   N nodes dtn1..dtnN; RATE (e.g. 1gbit) caps each node's link with tbf
#   on_node I CMD...      runs CMD on node I (its network, hostname, /dev/shm, /etc/hosts, ssh)
#   cluster_cap RATE|none caps every node's link (both directions, tbf) or lifts the cap
#   node_ip I             the address of node I
#   cluster_down          kills every process on every node and removes everything it made
# Each node is a network namespace with its own hostname (a UTS namespace), its own /dev/shm
# (a tmpfs in a mount namespace of its own) and an sshd on its address. The nodes' links meet on
# a bridge inside one more namespace (the "switch"), so the machine's own network namespace,
# addresses and routes are never touched. Names resolve through an /etc/hosts bind-mounted in
# each node only; ssh uses a generated key through an ssh_config bind-mounted the same way.
# cluster_up installs an EXIT trap that calls cluster_down (chain your own cleanup through
# cluster_on_exit). Returns 77 (skip) with the reason when namespaces or sshd are not available.

CLUSTER_SUBNET=10.213.77
CLUSTER_NODES=0
CLUSTER_DIR=""
CLUSTER_PREFIX="dtc$$"
declare -a CLUSTER_PIDS=()
declare -a CLUSTER_EXTRA_CLEANUP=()

cluster_on_exit() { CLUSTER_EXTRA_CLEANUP+=("$*"); }

cluster_skip() {
  echo "SKIP: simulated cluster unavailable: $*" >&2
  return 77
}

node_ip() { echo "$CLUSTER_SUBNET.$((10 + $1))"; }
node_ns() { echo "$CLUSTER_PREFIX-n$1"; }

cluster_up() {
  local n="$1" rate="${2:-}"
  [[ $(id -u) == 0 ]] || { cluster_skip "needs root (network namespaces)"; return 77; }
  local t
  for t in ip unshare nsenter ssh ssh-keygen /usr/sbin/sshd; do
    command -v "$t" >/dev/null || { cluster_skip "$t is not installed (scripts/setup.sh installs it)"; return 77; }
  done
  cluster_remove_stale
  CLUSTER_DIR="$(mktemp -d /tmp/dtrain-cluster.XXXXXX)"
  trap cluster_down EXIT
  # A test killed outright (ctest's timeout sends SIGKILL) cannot run its EXIT trap; a SIGTERM
  # or SIGINT ends it through the trap.
  trap 'exit 143' TERM
  trap 'exit 130' INT
  if ! ip netns add "$CLUSTER_PREFIX-sw" 2>"$CLUSTER_DIR/err"; then
    cluster_skip "cannot create a network namespace: $(cat "$CLUSTER_DIR/err")"
    return 77
  fi
  CLUSTER_NODES="$n"
  local sw="$CLUSTER_PREFIX-sw" i ns
  ip -n "$sw" link add br0 type bridge
  ip -n "$sw" link set br0 up
  ip -n "$sw" link set lo up
  ssh-keygen -q -t ed25519 -N "" -f "$CLUSTER_DIR/id" >/dev/null
  ssh-keygen -q -t ed25519 -N "" -f "$CLUSTER_DIR/host_key" >/dev/null
  cp "$CLUSTER_DIR/id.pub" "$CLUSTER_DIR/authorized_keys"
  {
    echo "127.0.0.1 localhost"
    for ((i = 1; i <= n; ++i)); do echo "$(node_ip "$i") dtn$i"; done
  } >"$CLUSTER_DIR/hosts"
  cat >"$CLUSTER_DIR/ssh_config" <<CFG
Host *
  IdentityFile $CLUSTER_DIR/id
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  LogLevel ERROR
  BatchMode yes
  ConnectTimeout 10
  ServerAliveInterval 5
  ServerAliveCountMax 3
CFG
  cat >"$CLUSTER_DIR/sshd_config" <<CFG
Port 22
HostKey $CLUSTER_DIR/host_key
AuthorizedKeysFile $CLUSTER_DIR/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
AcceptEnv *
MaxStartups 100:30:200
MaxSessions 100
ClientAliveInterval 2
ClientAliveCountMax 3
CFG
  mkdir -p /run/sshd  # sshd's privilege-separation folder (the Debian package makes it too)
  for ((i = 1; i <= n; ++i)); do
    ns="$(node_ns "$i")"
    ip netns add "$ns"
    ip -n "$sw" link add "n$i" type veth peer name eth0 netns "$ns"
    ip -n "$sw" link set "n$i" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$(node_ip "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip netns exec "$ns" unshare --uts --mount --propagation private -- bash -c "
      hostname dtn$i
      mount -t tmpfs -o size=4g tmpfs /dev/shm
      mount --bind '$CLUSTER_DIR/hosts' /etc/hosts
      mount --bind '$CLUSTER_DIR/ssh_config' /etc/ssh/ssh_config
      exec /usr/sbin/sshd -D -e -f '$CLUSTER_DIR/sshd_config' -o ListenAddress=$(node_ip "$i")
    " 2>>"$CLUSTER_DIR/sshd.$i.log" &
    CLUSTER_PIDS[$i]=$!
    disown "$!"
  done
  if [[ -n "$rate" ]]; then cluster_cap "$rate"; fi
  # Ready when every node reaches every other by name over ssh.
  local deadline=$((SECONDS + 20)) ok
  while :; do
    ok=1
    for ((i = 1; i <= n; ++i)); do
      on_node 1 ssh "dtn$i" true 2>/dev/null || { ok=0; break; }
    done
    ((ok)) && break
    if ((SECONDS > deadline)); then
      # Namespaces were made: this is a failure of the set-up, not a machine that cannot.
      cat "$CLUSTER_DIR"/sshd.*.log >&2
      echo "FAIL: simulated cluster: the nodes' sshd did not answer within 20 s" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "cluster: $n nodes up (dtn1..dtn$n on $CLUSTER_SUBNET.0/24${rate:+, links capped at $rate})" >&2
}

cluster_cap() {
  local rate="$1" i
  for ((i = 1; i <= CLUSTER_NODES; ++i)); do
    # Each direction: the node's egress and the switch port's egress toward it.
    ip netns exec "$(node_ns "$i")" tc qdisc del dev eth0 root 2>/dev/null || true
    ip netns exec "$CLUSTER_PREFIX-sw" tc qdisc del dev "n$i" root 2>/dev/null || true
    if [[ "$rate" == none ]]; then continue; fi
    ip netns exec "$(node_ns "$i")" tc qdisc add dev eth0 root tbf rate "$rate" burst 256kb latency 50ms
    ip netns exec "$CLUSTER_PREFIX-sw" tc qdisc add dev "n$i" root tbf rate "$rate" burst 256kb latency 50ms
  done
}

# The nodes share this machine's cores, which Open MPI cannot know: its ranks would busy-poll
# against each other's compute (4 ranks on 2 cores measured 16x slower). Waiting ranks yield.
# With CLUSTER_JOB_TIMEOUT set (seconds), CMD is killed after that long (exit 124), so that a
# hung job ends the test through its own cleanup, not through ctest's kill that skips it.
on_node() {
  local i="$1"
  shift
  local limit=()
  # --foreground: timeout stays in the test's process group, so Ctrl-C and the test's own
  # SIGTERM reach the job (dtrainrun ends what it started; nsenter execs it).
  [[ -n "${CLUSTER_JOB_TIMEOUT:-}" ]] && limit=(timeout --foreground -k 5 "$CLUSTER_JOB_TIMEOUT")
  OMPI_MCA_mpi_yield_when_idle=1 "${limit[@]}" \
    nsenter -t "${CLUSTER_PIDS[$i]}" -n -u -m --wd="$PWD" -- "$@"
}

# Namespaces of an earlier cluster whose shell is gone (killed before its cleanup could run):
# their processes and the namespaces go. Only dtc<pid>-* names, which only this file makes.
cluster_remove_stale() {
  local ns owner
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^dtc[0-9]+-(n[0-9]+|sw)$'); do
    owner="${ns#dtc}"
    owner="${owner%%-*}"
    kill -0 "$owner" 2>/dev/null && continue
    echo "cluster: removing $ns, left by an earlier run (pid $owner is gone)" >&2
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
}

# Every process still in a node's namespace: what a test must find none of, after a job.
node_processes() {  # I -> pids other than that node's sshd
  ip netns pids "$(node_ns "$1")" 2>/dev/null | grep -vx "${CLUSTER_PIDS[$1]}" || true
}

cluster_down() {
  local rc=$? i ns c
  set +e  # every step runs, whatever fails (an EXIT trap under set -e stopped halfway)
  for c in "${CLUSTER_EXTRA_CLEANUP[@]}"; do eval "$c" || true; done
  for ((i = 1; i <= CLUSTER_NODES; ++i)); do
    ns="$(node_ns "$i")"
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
  done
  for ((i = 1; i <= CLUSTER_NODES; ++i)); do
    ns="$(node_ns "$i")"
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      [[ -z "$(ip netns pids "$ns" 2>/dev/null)" ]] && break
      sleep 0.1
    done
    ip netns del "$ns" 2>/dev/null
  done
  ip netns del "$CLUSTER_PREFIX-sw" 2>/dev/null
  # Open MPI's session directories of the nodes (named after their hostnames, which only this
  # cluster uses): a job the test killed on purpose cannot remove its own.
  for ((i = 1; i <= CLUSTER_NODES; ++i)); do rm -rf /tmp/ompi.dtn$i.*; done
  [[ -n "$CLUSTER_DIR" ]] && rm -rf "$CLUSTER_DIR"
  CLUSTER_NODES=0
  return $rc
}
