#!/usr/bin/env python3
"""The docs are tested: README.md and every page of docs/.

    docs_test.py BUILD_DIR SOURCE_DIR links      relative links, links both ways, flags in commands
    docs_test.py BUILD_DIR SOURCE_DIR runnable   every block marked runnable, run as written

links: every relative link must name a file that exists (and, with a #anchor into a Markdown
file, a heading there); every page of docs/ must link back to the README and be linked from it;
every --flag given to a dtrain program (mnist_train, dtrainrun, custom_model, dtrain_bench and
its subcommands, torch_mnist.py) in a command block must be one its --help lists.

runnable: a fenced block whose previous non-blank line is `<!-- runnable -->` is run with bash
(-e, pipefail) as written, from a scratch folder that mirrors the source folder (links to its
entries, build/ to BUILD_DIR), so the outputs/ and logs/ a job writes land there; each block has
a time limit, runs in a process group of its own (killed whole on the limit), and must exit 0.
Every block trains on MNIST: where scripts/get-mnist.sh could not fetch data/mnist they are
skipped, saying so, and the test exits 77.
"""
import glob
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

RUNNABLE = "<!-- runnable -->"
BLOCK_TIMEOUT_S = 240
PROGRAMS = {"mnist_train", "dtrainrun", "custom_model", "dtrain_bench", "torch_mnist.py"}
# Tokens after which a command's flags are no longer the program's.
BREAKS = {"|", "||", "&&", ";", "&", "--", "mpirun", "timeout", "env", "sh", "bash"}


def pages(src):
    return [os.path.join(src, "README.md")] + sorted(glob.glob(os.path.join(src, "docs", "*.md")))


def blocks(text):
    """(first line number, info string, body, runnable) of every fenced block."""
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        m = re.match(r"^(\s*)(`{3,})(.*)$", lines[i])
        if not m:
            i += 1
            continue
        fence, info, start = m.group(2), m.group(3).strip(), i
        prev = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise SystemExit("unclosed code block at line %d" % (start + 1))
        out.append((start + 1, info, "\n".join(body), prev == RUNNABLE))
        i += 1
    return out


def prose(text):
    """The text outside fenced blocks and inline code, line numbers kept."""
    lines, keep, inside = text.split("\n"), [], None
    for line in lines:
        m = re.match(r"^\s*(`{3,})", line)
        if m and (inside is None or line.strip().startswith(inside)):
            inside = None if inside else m.group(1)
            keep.append("")
            continue
        keep.append("" if inside else re.sub(r"`[^`]*`", "", line))
    return keep


def slug(heading):
    """GitHub's anchor for a heading."""
    h = heading.strip().lower()
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")


def anchors(path):
    seen, out = {}, set()
    for line in prose(open(path).read()):
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if not m:
            continue
        s = slug(m.group(1))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else "%s-%d" % (s, n))
    return out


def check_links(src, errors):
    docs_dir = os.path.join(src, "docs")
    readme = os.path.join(src, "README.md")
    linked = {}
    for page in pages(src):
        rel = os.path.relpath(page, src)
        for n, line in enumerate(prose(open(page).read()), 1):
            for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", line):
                if re.match(r"^[a-z]+:", target):
                    continue  # http(s):, mailto:
                path, _, anchor = target.partition("#")
                full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
                linked.setdefault(rel, set()).add(full)
                if not os.path.exists(full):
                    errors.append("%s:%d: broken link %s (no %s)" %
                                  (rel, n, target, os.path.relpath(full, src)))
                elif anchor and full.endswith(".md") and anchor not in anchors(full):
                    errors.append("%s:%d: broken link %s (no heading '%s' in %s)" %
                                  (rel, n, target, anchor, os.path.relpath(full, src)))
    for page in pages(src)[1:]:
        rel = os.path.relpath(page, src)
        if readme not in linked.get(rel, set()):
            errors.append("%s: no link back to the README (../README.md)" % rel)
        if page not in linked.get("README.md", set()):
            errors.append("%s: the README's map of docs/ does not link it" % rel)
    if not glob.glob(os.path.join(docs_dir, "*.md")):
        errors.append("docs/ has no pages")


def help_flags(build, src, program, sub):
    if program == "torch_mnist.py":
        cmd = ["/usr/bin/python3", os.path.join(src, "examples/python/torch_mnist.py"), "--help"]
    else:
        cmd = [os.path.join(build, "bin", program)] + ([sub] if sub else []) + ["--help"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, PYTHONPATH=os.path.join(build, "python")))
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, "%s: %s" % (" ".join(cmd), e)
    if r.returncode != 0:
        return None, "%s exited %d: %s" % (" ".join(cmd), r.returncode, r.stderr.strip()[-300:])
    return set(re.findall(r"--[a-z0-9][a-z0-9-]*", r.stdout + r.stderr)), None


def commands(body):
    """Each command line of a shell block, continuations joined, with its line offset."""
    out, pending, first = [], "", 0
    for k, line in enumerate(body.split("\n")):
        if not pending:
            first = k
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((first, pending + line))
        pending = ""
    if pending:
        out.append((first, pending))
    return out


def check_flags(build, src, errors):
    cache, checked = {}, 0
    for page in pages(src):
        rel = os.path.relpath(page, src)
        for line_no, info, body, _ in blocks(open(page).read()):
            if info and info not in ("sh", "bash", "shell", "console"):
                continue  # C++, CMake, a diff, JSON, YAML: no command lines
            for offset, line in commands(body):
                try:
                    tokens = shlex.split(line, comments=True)
                except ValueError:
                    tokens = line.split("#", 1)[0].split()
                program, sub = None, None
                for i, tok in enumerate(tokens):
                    base = os.path.basename(tok)
                    if base in PROGRAMS:
                        program, sub = base, None
                        if base == "dtrain_bench" and i + 1 < len(tokens) and \
                                not tokens[i + 1].startswith("-"):
                            sub = tokens[i + 1]
                        continue
                    if tok in BREAKS or base in BREAKS:
                        program = None
                        continue
                    if program is None or not re.match(r"^--[a-z]", tok):
                        continue
                    flag = tok.split("=", 1)[0]
                    key = (program, sub)
                    if key not in cache:
                        cache[key] = help_flags(build, src, program, sub)
                    known, why = cache[key]
                    where = "%s:%d" % (rel, line_no + 1 + offset)
                    if known is None:
                        if why:
                            errors.append("%s: cannot read the flags of %s: %s" %
                                          (where, program, why))
                            cache[key] = (None, "")  # said once
                    elif flag not in known:
                        errors.append("%s: %s%s has no flag %s (not in its --help)" %
                                      (where, program, " " + sub if sub else "", flag))
                    checked += 1
    if checked < 20:
        errors.append("only %d flags found in command blocks: the parser no longer sees them" %
                      checked)
    return checked


def mirror(build, src):
    scratch = tempfile.mkdtemp(prefix="dtrain-docs-")
    for name in os.listdir(src):
        if name in (".git", "build", "outputs", "logs", "demo-output"):
            continue
        os.symlink(os.path.join(src, name), os.path.join(scratch, name))
    os.symlink(os.path.abspath(build), os.path.join(scratch, "build"))
    return scratch


def run_blocks(build, src):
    found, ran, skipped, failed = 0, 0, 0, []
    have_data = os.path.exists(os.path.join(src, "data", "mnist", "train-images-idx3-ubyte")) or \
        os.path.exists(os.path.join(src, "data", "mnist", "train-images-idx3-ubyte.gz"))
    scratch = mirror(build, src)
    try:
        for page in pages(src):
            rel = os.path.relpath(page, src)
            for line_no, _, body, runnable in blocks(open(page).read()):
                if not runnable:
                    continue
                found += 1
                where = "%s:%d" % (rel, line_no)
                if not have_data:  # every block trains on MNIST (data/mnist is the default)
                    print("SKIP %s: data/mnist is missing (scripts/get-mnist.sh)" % where)
                    skipped += 1
                    continue
                work = tempfile.mkdtemp(prefix="block-", dir=scratch)
                for name in os.listdir(scratch):
                    if not name.startswith("block-"):
                        os.symlink(os.path.join(scratch, name), os.path.join(work, name))
                print("RUN  %s\n%s" % (where, body), flush=True)
                start = time.time()
                p = subprocess.Popen(["bash", "-e", "-o", "pipefail", "-c", body], cwd=work,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
                try:
                    out, _ = p.communicate(timeout=BLOCK_TIMEOUT_S)
                    rc = p.returncode
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    out, _ = p.communicate()
                    rc = "timeout after %d s" % BLOCK_TIMEOUT_S
                finally:
                    try:
                        os.killpg(p.pid, signal.SIGKILL)  # whatever the block left running
                    except ProcessLookupError:
                        pass
                seconds = time.time() - start
                if rc != 0:
                    failed.append("%s exited %s after %.0f s; its output ends:\n%s" %
                                  (where, rc, seconds, "\n".join(out.splitlines()[-25:])))
                    print("FAIL %s (%.0f s)" % (where, seconds), flush=True)
                else:
                    ran += 1
                    print("ok   %s (%.0f s)" % (where, seconds), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return found, ran, skipped, failed


def self_check(build):
    """The checks find what they are for: a made-up tree with one mistake of each kind."""
    src = tempfile.mkdtemp(prefix="dtrain-docs-selfcheck-")
    try:
        os.makedirs(os.path.join(src, "docs"))
        open(os.path.join(src, "README.md"), "w").write(
            "# T\n\n[a](docs/a.md#no-such-heading) [b](docs/missing.md)\n\n"
            "```\nbuild/bin/mnist_train --epochs 1 --no-such-flag 3\n```\n")
        open(os.path.join(src, "docs", "a.md"), "w").write("# A page\n\nno link back\n")
        open(os.path.join(src, "docs", "b.md"), "w").write("[README](../README.md)\n")
        errors = []
        check_links(src, errors)
        check_flags(build, src, errors)
        wanted = ["no heading 'no-such-heading' in docs/a.md", "(no docs/missing.md)",
                  "docs/a.md: no link back", "docs/b.md: the README's map",
                  "mnist_train has no flag --no-such-flag"]
        missed = [w for w in wanted if not any(w in e for e in errors)]
        if any("--epochs" in e for e in errors):
            missed.append("(--epochs, a real flag, was reported)")
        return missed
    finally:
        shutil.rmtree(src, ignore_errors=True)


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("links", "runnable"):
        raise SystemExit("usage: docs_test.py BUILD_DIR SOURCE_DIR links|runnable")
    build, src, what = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2]), sys.argv[3]
    if what == "links":
        missed = self_check(build)
        if missed:
            print("FAIL: the checks missed mistakes made on purpose: " + "; ".join(missed))
            return 1
        errors = []
        check_links(src, errors)
        checked = check_flags(build, src, errors)
        for e in errors:
            print("FAIL: " + e)
        if errors:
            return 1
        print("docs: %d pages, links resolve both ways, %d flags in command blocks known to their "
              "programs" % (len(pages(src)), checked))
        return 0
    found, ran, skipped, failed = run_blocks(build, src)
    for f in failed:
        print("FAIL: " + f)
    if failed:
        return 1
    if found == 0:
        print("FAIL: no block is marked %s" % RUNNABLE)
        return 1
    if ran == 0:
        print("SKIP: every runnable block needs data/mnist")
        return 77
    print("docs: %d runnable blocks ran and exited 0 (%d skipped)" % (ran, skipped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
