#!/usr/bin/env python3
"""dtrain's Kubernetes manifests (docs/kubernetes/) checked without a cluster.

    check_manifests.py BUILD_DIR SOURCE_DIR

1. schemas: mpijob.yaml, tfjob.yaml and pvc.yaml validate against the JSON Schemas in tests/k8s/,
   written by hand from the operators' CRDs (each schema's description names its source); the
   pod-template definitions the two job schemas share are the same in both.
2. mutations: copies of the manifests with one mistake each (a misspelt field, a value outside an
   enum, a missing required field, a number given as a string, ...) must each fail, at the place
   the mistake is: a check that lets one through is itself broken.
3. flags: every --flag the manifests give mnist_train (or dtrainrun) is one its --help lists; a
   misspelt one put in on purpose must be reported.
4. the rules the schemas cannot say: the operators' cross-field rules (the MPIJob's worker host
   names, mpirun's -np against the workers' slots) and dtrain's (TF_CONFIG task types it knows, one
   chief, the same flags for every task, outputs on the claim, paths the image provides).
5. the manifests' own command lines, run here: the TFJob's tasks with the TF_CONFIG the training
   operator would write for them (hosts mapped to 127.0.0.1), through dtrain-wait-for-ps; the
   MPIJob's mpirun line with its ranks on this machine. Only what cannot be the same here is
   changed: binary paths, synthetic data for /opt/dtrain/data/mnist, 1 epoch, outputs under a
   scratch folder, and for mpirun --oversubscribe (and --allow-run-as-root as root).

Exit 0 when everything holds, 1 otherwise.
"""
import copy
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

import jsonschema
import yaml

PROGRAMS = ("mnist_train", "dtrainrun")
IMAGE_BIN = "/opt/dtrain/bin"
IMAGE_DATA = "/opt/dtrain/data/mnist"
RUN_TIMEOUT_S = 180  # for each job run here, all its processes together
SHELL_BREAKS = {"|", "||", "&&", ";", "&"}

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, flush=True)


def ok(msg):
    print("ok   " + msg, flush=True)


def where(error):
    return "/".join(str(p) for p in error.absolute_path)


# ---------------------------------------------------------------------------------------------
# 1. schemas


def load_schema(path):
    schema = json.load(open(path))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def errors_of(validator, doc):
    return sorted(validator.iter_errors(doc), key=lambda e: where(e))


def check_schemas(src, validators, manifests):
    for name, doc in manifests.items():
        errs = errors_of(validators[name], doc)
        for e in errs:
            fail("docs/kubernetes/%s.yaml: /%s: %s" % (name, where(e), e.message))
        if not errs:
            ok("docs/kubernetes/%s.yaml validates against tests/k8s/%s.schema.json" % (name, name))
    mpi, tf = validators["mpijob"].schema["$defs"], validators["tfjob"].schema["$defs"]
    shared = sorted(set(mpi) & set(tf) - {"objectMeta", "runPolicy"})
    drift = [k for k in shared if mpi[k] != tf[k]]
    if drift or "podTemplateSpec" not in shared:
        fail("the pod-template definitions differ between the two job schemas: %s" % drift)
    else:
        ok("the job schemas share %d pod-template definitions, identical in both" % len(shared))


# ---------------------------------------------------------------------------------------------
# 2. mutations


def rename(d, old, new):
    d[new] = d.pop(old)


def container(doc, replica, i=0):
    specs = doc["spec"].get("mpiReplicaSpecs") or doc["spec"]["tfReplicaSpecs"]
    return specs[replica]["template"]["spec"]["containers"][i]


def mpi_mutations():
    R = "spec/mpiReplicaSpecs"
    return [
        ("misspelt field spec.slotPerWorker", "spec",
         lambda d: rename(d["spec"], "slotsPerWorker", "slotPerWorker")),
        ("misspelt field spec.sshAuthMountpath", "spec",
         lambda d: rename(d["spec"], "sshAuthMountPath", "sshAuthMountpath")),
        ("cleanPodPolicy: Sometimes", "spec/runPolicy/cleanPodPolicy",
         lambda d: d["spec"]["runPolicy"].update(cleanPodPolicy="Sometimes")),
        ("mpiImplementation: OpenMP", "spec/mpiImplementation",
         lambda d: d["spec"].update(mpiImplementation="OpenMP")),
        ("launcherCreationPolicy: WhenReady", "spec/launcherCreationPolicy",
         lambda d: d["spec"].update(launcherCreationPolicy="WhenReady")),
        ("spec.mpiReplicaSpecs missing", "spec", lambda d: d["spec"].pop("mpiReplicaSpecs")),
        ("the Launcher replica spec missing", R, lambda d: d["spec"]["mpiReplicaSpecs"].pop("Launcher")),
        ("Worker replicas as a string (\"2\")", R + "/Worker/replicas",
         lambda d: d["spec"]["mpiReplicaSpecs"]["Worker"].update(replicas="2")),
        ("Launcher replicas: 2", R + "/Launcher/replicas",
         lambda d: d["spec"]["mpiReplicaSpecs"]["Launcher"].update(replicas=2)),
        ("Worker restartPolicy: Always (an MPIJob takes Never or OnFailure)",
         R + "/Worker/restartPolicy",
         lambda d: d["spec"]["mpiReplicaSpecs"]["Worker"].update(restartPolicy="Always")),
        ("slotsPerWorker: -1", "spec/slotsPerWorker", lambda d: d["spec"].update(slotsPerWorker=-1)),
        ("misspelt container field comand", R + "/Launcher/template/spec/containers/0",
         lambda d: rename(container(d, "Launcher"), "command", "comand")),
        ("misspelt container field volumeMount", R + "/Worker/template/spec/containers/0",
         lambda d: rename(container(d, "Worker"), "volumeMounts", "volumeMount")),
        ("a volumeMount without mountPath", R + "/Worker/template/spec/containers/0/volumeMounts/0",
         lambda d: container(d, "Worker")["volumeMounts"][0].pop("mountPath")),
        ("a container without image", R + "/Worker/template/spec/containers/0",
         lambda d: container(d, "Worker").pop("image")),
        ("no containers", R + "/Launcher/template/spec/containers",
         lambda d: d["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"].update(containers=[])),
        ("memory limit \"lots\"", R + "/Worker/template/spec/containers/0/resources/limits/memory",
         lambda d: container(d, "Worker")["resources"]["limits"].update(memory="lots")),
        ("a volume with two sources", R + "/Worker/template/spec/volumes/0",
         lambda d: d["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["volumes"][0]
         .update(emptyDir={})),
        ("apiVersion kubeflow.org/v1 (the v1 MPIJob is another API)", "apiVersion",
         lambda d: d.update(apiVersion="kubeflow.org/v1")),
    ]


def tf_mutations():
    R = "spec/tfReplicaSpecs"
    return [
        ("misspelt field spec.tfReplicaSpec", "spec",
         lambda d: rename(d["spec"], "tfReplicaSpecs", "tfReplicaSpec")),
        ("cleanPodPolicy: Sometimes", "spec/runPolicy/cleanPodPolicy",
         lambda d: d["spec"]["runPolicy"].update(cleanPodPolicy="Sometimes")),
        ("successPolicy: AnyWorker", "spec/successPolicy",
         lambda d: d["spec"].update(successPolicy="AnyWorker")),
        ("replica type Evaluater (misspelt)", R,
         lambda d: d["spec"]["tfReplicaSpecs"].update(Evaluater=copy.deepcopy(
             d["spec"]["tfReplicaSpecs"]["Worker"]))),
        ("both Chief and Master", R,
         lambda d: d["spec"]["tfReplicaSpecs"].update(Master=copy.deepcopy(
             d["spec"]["tfReplicaSpecs"]["Chief"]))),
        ("spec.tfReplicaSpecs missing", "spec", lambda d: d["spec"].pop("tfReplicaSpecs")),
        ("Worker replicas as a string (\"2\")", R + "/Worker/replicas",
         lambda d: d["spec"]["tfReplicaSpecs"]["Worker"].update(replicas="2")),
        ("PS restartPolicy: Sometimes", R + "/PS/restartPolicy",
         lambda d: d["spec"]["tfReplicaSpecs"]["PS"].update(restartPolicy="Sometimes")),
        ("the PS container named dtrain, none named tensorflow",
         R + "/PS/template/spec/containers",
         lambda d: container(d, "PS").update(name="dtrain")),
        ("containerPort as a string (\"2222\")",
         R + "/Chief/template/spec/containers/0/ports/0/containerPort",
         lambda d: container(d, "Chief")["ports"][0].update(containerPort="2222")),
        ("misspelt container field arg", R + "/Worker/template/spec/containers/0",
         lambda d: rename(container(d, "Worker"), "args", "arg")),
        ("a persistentVolumeClaim without claimName",
         R + "/Chief/template/spec/volumes/0/persistentVolumeClaim",
         lambda d: d["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]["volumes"][0]
         ["persistentVolumeClaim"].pop("claimName")),
        ("metadata.name with capitals (not a DNS-1035 label)", "metadata/name",
         lambda d: d["metadata"].update(name="Dtrain-MNIST")),
        ("kind TFjob", "kind", lambda d: d.update(kind="TFjob")),
    ]


def pvc_mutations():
    return [
        ("accessModes: [ReadWriteAll]", "spec/accessModes/0",
         lambda d: d["spec"].update(accessModes=["ReadWriteAll"])),
        ("no storage request", "spec/resources/requests",
         lambda d: d["spec"]["resources"]["requests"].pop("storage")),
        ("misspelt field storageClass", "spec",
         lambda d: d["spec"].update(storageClass="nfs")),
    ]


def brief(error):
    """An error's message, or for one that prints a whole object, the rule it broke."""
    if len(error.message) <= 150:
        return error.message
    return "fails %r: %s" % (error.validator, error.schema.get("description", "")[:150])


def check_mutations(validators, manifests):
    table = {"mpijob": mpi_mutations(), "tfjob": tf_mutations(), "pvc": pvc_mutations()}
    caught = 0
    for name, mutations in table.items():
        for label, path, mutate in mutations:
            doc = copy.deepcopy(manifests[name])
            mutate(doc)
            errs = errors_of(validators[name], doc)
            at = [e for e in errs if where(e) == path]
            if not errs:
                fail("%s.yaml with %s passed the schema" % (name, label))
            elif not at:
                fail("%s.yaml with %s failed, but not at /%s: %s" %
                     (name, label, path, "; ".join("/%s: %s" % (where(e), e.message)
                                                   for e in errs)[:400]))
            else:
                caught += 1
                ok("caught %s.yaml with %s: /%s: %s" % (name, label, path, brief(at[0])))
    total = sum(len(m) for m in table.values())
    if caught == total:
        ok("all %d mutated manifests were refused" % total)


# ---------------------------------------------------------------------------------------------
# 3. flags


def argv_of(c):
    return list(c.get("command", [])) + list(c.get("args", []))


def containers_of(doc):
    specs = doc["spec"].get("mpiReplicaSpecs") or doc["spec"].get("tfReplicaSpecs") or {}
    for rtype, spec in specs.items():
        for i, c in enumerate(spec["template"]["spec"]["containers"]):
            yield rtype, i, c


def program_flags(argv):
    """[(program, [--flag, ...]), ...] for each dtrain program in a container's argv; an argv
    that is a shell script (sh -c SCRIPT) is split as the shell would."""
    if len(argv) >= 3 and os.path.basename(argv[0]) in ("sh", "bash") and "-c" in argv:
        argv = shlex.split(argv[argv.index("-c") + 1], comments=True)
    out, program = [], None
    for tok in argv:
        base = os.path.basename(tok)
        if base in PROGRAMS:
            program = (base, [])
            out.append(program)
            continue
        if tok in SHELL_BREAKS or (tok == "--" and program and program[0] == "dtrainrun"):
            program = None
            continue
        if program and re.match(r"^--[a-z]", tok):
            program[1].append(tok.split("=", 1)[0])
    return out


def help_flags(build, program, cache):
    if program not in cache:
        exe = os.path.join(build, "bin", program)
        r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise SystemExit("%s --help exited %d: %s" % (exe, r.returncode, r.stderr[-300:]))
        cache[program] = set(re.findall(r"--[a-z0-9][a-z0-9-]*", r.stdout + r.stderr))
    return cache[program]


def unknown_flags(build, doc, cache):
    found, unknown = 0, []
    for rtype, i, c in containers_of(doc):
        for program, flags in program_flags(argv_of(c)):
            known = help_flags(build, program, cache)
            for f in flags:
                found += 1
                if f not in known:
                    unknown.append("%s container %d: %s has no flag %s" % (rtype, i, program, f))
    return found, unknown


def check_flags(build, manifests):
    cache, total = {}, 0
    for name in ("mpijob", "tfjob"):
        found, unknown = unknown_flags(build, manifests[name], cache)
        total += found
        for u in unknown:
            fail("%s.yaml: %s (not in its --help)" % (name, u))
        if not unknown:
            ok("%s.yaml: the %d flags it gives mnist_train are all in mnist_train --help" %
               (name, found))
    if total < 10:
        fail("only %d dtrain flags found in the manifests: the parser no longer sees them" % total)
    # The check finds what it is for: --epoch (misspelt) put into a copy.
    doc = copy.deepcopy(manifests["tfjob"])
    args = container(doc, "Worker")["args"]
    args[args.index("--epochs")] = "--epoch"
    _, unknown = unknown_flags(build, doc, cache)
    if any("has no flag --epoch" in u for u in unknown):
        ok("caught tfjob.yaml with --epoch (misspelt) given to mnist_train")
    else:
        fail("the flag check let --epoch through")


# ---------------------------------------------------------------------------------------------
# 4. rules the schemas cannot express


def option(argv, *names):
    """The value after the first of names in argv (also --name=value), or None."""
    for i, tok in enumerate(argv):
        for n in names:
            if tok == n and i + 1 < len(argv):
                return argv[i + 1]
            if tok.startswith(n + "="):
                return tok.split("=", 1)[1]
    return None


def after(argv, program):
    for i, tok in enumerate(argv):
        if os.path.basename(tok) == program:
            return argv[i + 1:]
    return None


def pvc_mounts(pod_spec, c, claim):
    vols = {v["name"] for v in pod_spec.get("volumes", [])
            if v.get("persistentVolumeClaim", {}).get("claimName") == claim}
    return [m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in vols]


def under(path, mounts):
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts)


def check_rules(src, manifests):
    dockerfile = open(os.path.join(src, "docs/kubernetes/Dockerfile")).read()
    claim = manifests["pvc"]["metadata"]["name"]
    problems = []

    # The image provides what the manifests name.
    for needed, what in ((IMAGE_BIN + "/", "the binaries' folder"), (IMAGE_DATA, "MNIST"),
                         (IMAGE_BIN + "/dtrain-wait-for-ps", "dtrain-wait-for-ps")):
        if needed not in dockerfile:
            problems.append("the Dockerfile does not put %s at %s" % (what, needed))

    # MPIJob: the operator's name rule, -np, the ssh set-up the image makes, outputs on the claim.
    mpi = manifests["mpijob"]
    spec = mpi["spec"]
    workers = spec["mpiReplicaSpecs"]["Worker"]["replicas"]
    slots = spec.get("slotsPerWorker", 1)
    last = "%s-worker-%d" % (mpi["metadata"]["name"], workers - 1)
    if len(last) > 63 or not re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?$", last):
        problems.append("mpijob: the last worker's host name %s is not a DNS-1035 label" % last)
    launcher = spec["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    largv = argv_of(launcher)
    if os.path.basename(largv[0]) != "mpirun":
        problems.append("mpijob: the launcher's command is %s, not mpirun" % largv[0])
    np_ = option(largv, "-np", "-n", "--np")
    if np_ is None or int(np_) != workers * slots:
        problems.append("mpijob: mpirun -np %s, but the workers have %d x %d slots" %
                        (np_, workers, slots))
    train = after(largv, "mnist_train") or []
    if option(train, "--mode") not in (None, "auto", "allreduce"):
        problems.append("mpijob: mnist_train --mode %s under mpirun" % option(train, "--mode"))
    wspec = spec["mpiReplicaSpecs"]["Worker"]["template"]["spec"]
    wc = wspec["containers"][0]
    out = option(train, "--output-dir") or "outputs"
    if not under(out, pvc_mounts(wspec, wc, claim)):
        problems.append("mpijob: --output-dir %s is not on the claim %s in the worker pods, "
                        "where rank 0 writes" % (out, claim))
    ssh = spec.get("sshAuthMountPath", "/root/.ssh")
    if "HostKey %s/id_rsa" % ssh not in dockerfile:
        problems.append("mpijob: the image's sshd does not take its host key from "
                        "sshAuthMountPath %s" % ssh)
    sshd_config = option(argv_of(wc), "-f")
    if os.path.basename(argv_of(wc)[0]) != "sshd" or not sshd_config or \
            sshd_config not in dockerfile:
        problems.append("mpijob: the workers do not run sshd with the config the image writes")
    uid = re.search(r"useradd [^\n]*--uid (\d+)", dockerfile)
    for rtype, r in spec["mpiReplicaSpecs"].items():
        user = r["template"]["spec"].get("securityContext", {}).get("runAsUser")
        if uid is None or user != int(uid.group(1)):
            problems.append("mpijob: %s runs as uid %s, the image's sshd user is %s" %
                            (rtype, user, uid and uid.group(1)))

    # TFJob: the task types and counts dtrain accepts, one set of flags, outputs on the claim.
    tf = manifests["tfjob"]
    reps = tf["spec"]["tfReplicaSpecs"]
    extra = set(reps) - {"Chief", "Worker", "PS"}
    if extra:
        problems.append("tfjob: replica types %s: dtrain's TF_CONFIG tasks are chief, worker and "
                        "ps (mnist_train refuses evaluator; master is not a task type it knows)" %
                        sorted(extra))
    if reps.get("Chief", {}).get("replicas", 1) > 1:
        problems.append("tfjob: more than one Chief (dtrain refuses more than one chief)")
    if "PS" not in reps or ("Worker" not in reps and "Chief" not in reps):
        problems.append("tfjob: a ps job needs a PS and a Chief or Worker")
    if tf["spec"].get("enableDynamicWorker"):
        problems.append("tfjob: enableDynamicWorker makes the operator write a sparse TF_CONFIG "
                        "(worker as a map), which dtrain does not read")
    argvs = {}
    for rtype, r in reps.items():
        c = next(c for c in r["template"]["spec"]["containers"] if c["name"] == "tensorflow")
        argv = argv_of(c)
        argvs[rtype] = after(argv, "mnist_train")
        if argvs[rtype] is None:
            problems.append("tfjob: %s does not run mnist_train" % rtype)
            continue
        if option(argvs[rtype], "--mode") not in ("ps", None, "auto"):
            problems.append("tfjob: %s runs mnist_train --mode %s" %
                            (rtype, option(argvs[rtype], "--mode")))
        if os.path.basename(argv[0]) != "dtrain-wait-for-ps":
            problems.append("tfjob: %s starts without dtrain-wait-for-ps (a task that starts "
                            "before the ps pods would not resolve them)" % rtype)
        for p in c.get("ports", []):
            if p.get("name") == "tfjob-port" and p["containerPort"] < 1024:
                problems.append("tfjob: port %d needs root; the image runs as uid 1000" %
                                p["containerPort"])
    if len({json.dumps(a) for a in argvs.values()}) > 1:
        problems.append("tfjob: the tasks get different mnist_train flags: %s" % argvs)
    chief = "Chief" if "Chief" in reps else "Worker"
    cspec = reps[chief]["template"]["spec"]
    cc = next(c for c in cspec["containers"] if c["name"] == "tensorflow")
    out = option(argvs.get(chief) or [], "--output-dir") or "outputs"
    if not under(out, pvc_mounts(cspec, cc, claim)):
        problems.append("tfjob: --output-dir %s is not on the claim %s in the %s pod, which "
                        "writes" % (out, claim, chief))
    for p in problems:
        fail(p)
    if not problems:
        ok("the operators' cross-field rules and dtrain's hold (-np %d = %d workers x %d slots; "
           "TFJob tasks %s with one set of flags; outputs on the claim %s)" %
           (workers * slots, workers, slots, "/".join(sorted(reps)), claim))


# ---------------------------------------------------------------------------------------------
# 5. the command lines, run here


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def localize(argv, src, build, scratch):
    """The container's argv as it can run here (see the module's docstring)."""
    out, i = [], 0
    while i < len(argv):
        tok = argv[i]
        if tok == IMAGE_BIN + "/dtrain-wait-for-ps":
            out.append(os.path.join(src, "docs/kubernetes/wait-for-ps.sh"))
        elif tok.startswith(IMAGE_BIN + "/"):
            out.append(os.path.join(build, "bin", os.path.basename(tok)))
        elif tok == "--data-folder" and argv[i + 1] == IMAGE_DATA:
            out += ["--synthetic-data", "1200"]
            i += 1
        elif tok == "--epochs":
            out += ["--epochs", "1"]
            i += 1
        elif tok == "--output-dir":
            out += ["--output-dir", scratch + argv[i + 1]]
            i += 1
        else:
            out.append(tok)
        i += 1
    return out


def start(argv, env, log):
    """A process in a session of its own, so that it can be killed with whatever it started."""
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def finish(procs, deadline):
    """Exit codes of procs, waited for until deadline; those still running then (and their
    children) are killed and get "timeout"."""
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(0.1, deadline - time.time())))
        except subprocess.TimeoutExpired:
            codes.append("timeout after %d s" % RUN_TIMEOUT_S)
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
    return codes


def tf_config(job, rtype, index, ports):
    """TF_CONFIG as the training operator writes it (genTFConfigJSONStr): the cluster from every
    replica spec, keys the lower-cased replica types, plus "environment": "cloud"; the hosts,
    NAME-TYPE-I.NAMESPACE.svc:PORT there, are 127.0.0.1 and a free port each here."""
    cluster = {}
    for rt, spec in job["spec"]["tfReplicaSpecs"].items():
        cluster[rt.lower()] = ["127.0.0.1:%d" % ports[(rt, i)] for i in range(spec.get("replicas", 1))]
    return json.dumps({"cluster": cluster, "task": {"type": rtype.lower(), "index": index},
                       "environment": "cloud"}, separators=(",", ":"))


def run_tfjob(src, build, job, scratch):
    reps = job["spec"]["tfReplicaSpecs"]
    tasks = [(rt, i) for rt, spec in reps.items() for i in range(spec.get("replicas", 1))]
    ports = dict(zip(tasks, free_ports(len(tasks))))
    deadline = time.time() + RUN_TIMEOUT_S
    procs = []
    for rt, i in tasks:
        c = next(c for c in reps[rt]["template"]["spec"]["containers"] if c["name"] == "tensorflow")
        argv = localize(argv_of(c), src, build, scratch)
        env = dict(os.environ, TF_CONFIG=tf_config(job, rt, i, ports))
        log = open(os.path.join(scratch, "tfjob-%s-%d.log" % (rt.lower(), i)), "w+")
        procs.append(((rt, i), argv, log, start(argv, env, log)))
    codes = finish([p for *_, p in procs], deadline)
    bad = []
    for ((rt, i), argv, log, _), rc in zip(procs, codes):
        log.seek(0)
        text = log.read()
        if rc != 0:
            bad.append("%s %d exited %s: %s\n%s" % (rt, i, rc, shlex.join(argv), text[-1500:]))
    out = option(after(argv_of(container(job, "Chief" if "Chief" in reps else "Worker")),
                       "mnist_train"), "--output-dir")
    metrics = os.path.join(scratch + out, "metrics.jsonl")
    if bad:
        for b in bad:
            fail("tfjob.yaml's tasks run here: " + b)
    elif not os.path.exists(metrics):
        fail("tfjob.yaml's tasks ran, but the chief wrote no %s" % metrics)
    else:
        last = json.loads(open(metrics).read().splitlines()[-1])
        ok("tfjob.yaml's %d tasks ran here with the operator's TF_CONFIG through "
           "dtrain-wait-for-ps: exit 0, the chief wrote metrics.jsonl (world_size %d)" %
           (len(tasks), last["world_size"]))


def run_mpijob(src, build, job, scratch):
    launcher = job["spec"]["mpiReplicaSpecs"]["Launcher"]["template"]["spec"]["containers"][0]
    argv = localize(argv_of(launcher), src, build, scratch)
    local = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    argv = argv[:1] + local + argv[1:]
    # The operator's hostfile does not exist here: every rank runs on this machine.
    env = {k: v for k, v in os.environ.items() if k != "OMPI_MCA_orte_default_hostfile"}
    log = open(os.path.join(scratch, "mpijob-launcher.log"), "w+")
    rc = finish([start(argv, env, log)], time.time() + RUN_TIMEOUT_S)[0]
    log.seek(0)
    text = log.read()
    out = option(after(argv_of(launcher), "mnist_train"), "--output-dir")
    metrics = os.path.join(scratch + out, "metrics.jsonl")
    if rc != 0:
        fail("mpijob.yaml's launcher command run here exited %s: %s\n%s" %
             (rc, shlex.join(argv), text[-1500:]))
    elif not os.path.exists(metrics):
        fail("mpijob.yaml's launcher command ran, but rank 0 wrote no %s" % metrics)
    else:
        last = json.loads(open(metrics).read().splitlines()[-1])
        ok("mpijob.yaml's mpirun line ran here (%s ranks): exit 0, rank 0 wrote metrics.jsonl "
           "(world_size %d)" % (option(argv, "-np", "-n", "--np"), last["world_size"]))


def check_wait_script(src):
    script = os.path.join(src, "docs/kubernetes/wait-for-ps.sh")
    env = dict(os.environ, DTRAIN_WAIT_FOR_PS_TIMEOUT="1",
               TF_CONFIG='{"cluster":{"ps":["no-such-ps.invalid:2222"],"worker":["127.0.0.1:1"]},'
                         '"task":{"type":"worker","index":0},"environment":"cloud"}')
    r = subprocess.run(["sh", script, "echo", "started"], env=env, capture_output=True, text=True,
                       timeout=60)
    if r.returncode == 0 and r.stdout.strip() == "started" and \
            "no-such-ps.invalid does not resolve" in r.stderr:
        ok("dtrain-wait-for-ps waits for a ps host that does not resolve, says so, and starts "
           "the command after DTRAIN_WAIT_FOR_PS_TIMEOUT")
    else:
        fail("dtrain-wait-for-ps with an unresolvable ps host: exit %d, stdout %r, stderr %r" %
             (r.returncode, r.stdout, r.stderr))


# ---------------------------------------------------------------------------------------------


def main():
    if len(sys.argv) != 3:
        raise SystemExit("usage: check_manifests.py BUILD_DIR SOURCE_DIR")
    build, src = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    manifests, validators = {}, {}
    for name in ("mpijob", "tfjob", "pvc"):
        docs = list(yaml.safe_load_all(open(os.path.join(src, "docs/kubernetes/%s.yaml" % name))))
        if len(docs) != 1:
            raise SystemExit("docs/kubernetes/%s.yaml: %d YAML documents, expected 1" %
                             (name, len(docs)))
        manifests[name] = docs[0]
        validators[name] = load_schema(os.path.join(src, "tests/k8s/%s.schema.json" % name))
    check_schemas(src, validators, manifests)
    check_mutations(validators, manifests)
    check_flags(build, manifests)
    check_rules(src, manifests)
    check_wait_script(src)
    with tempfile.TemporaryDirectory(prefix="dtrain-k8s-") as scratch:
        run_tfjob(src, build, manifests["tfjob"], scratch)
        run_mpijob(src, build, manifests["mpijob"], scratch)
    if failures:
        print("k8s manifests: %d check(s) failed" % len(failures))
        return 1
    print("k8s manifests: all checks passed (jsonschema %s)" % jsonschema_version())
    return 0


def jsonschema_version():
    try:
        from importlib.metadata import version
        return version("jsonschema")
    except Exception:  # noqa: BLE001 - only for the summary line
        return "?"


if __name__ == "__main__":
    sys.exit(main())
