# Every target that needs the virtualenv creates it first, so `make run` and `make test`
# each work alone on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup run cluster test test-fast test-long sim-sweep chaos chaos-ci bench bench-restart bench-recall-quality cache-sim fuzz-peers fuzz-api lint mutate sim clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

## one node on the embedded defaults: no cluster, no Redis, no S3; HTTP on :3300
run: $(STAMP)
	$(BIN)/python -m dakera_actors

## three nodes in cluster mode on loopback, each its own process; Ctrl-C stops all
cluster: $(STAMP)
	$(BIN)/python -m dakera_actors.devcluster --nodes 3

## the whole suite: unit, simulation and real-process tests. The in-process tests (pure and
## simulated: CPU-bound, nothing shared) run on every core; then the real-process ones, two at a
## time (their nodes use 1.2 cores on average: bench/RESULTS.md "Suite time"; REAL_WORKERS=0 runs
## them one at a time). Fails if either part fails.
REAL_WORKERS ?= 2
test: $(STAMP)
	@status=0; \
	$(BIN)/python -m pytest -q -n auto -m "not real and not long" --durations=15 || status=$$?; \
	$(BIN)/python -m pytest -q -n $(REAL_WORKERS) -m "real and not long" --durations=15 || status=$$?; \
	exit $$status

## the full seed sweeps of the three schedule simulators (make test runs a sample of each):
## 10,000 replication schedules, 2,000 lease schedules, 16 history schedules per setup (bench/RESULTS.md)
sim-sweep: $(STAMP)
	REPL_SIM_SCHEDULES=10000 LEASE_SIM_SCHEDULES=2000 REPLICATION_SCHEDULES=16 $(BIN)/python -m pytest -q -n auto \
		--durations=10 tests/replication/test_sim.py tests/lease/test_sim.py tests/sim/test_replication_history.py

## the inner loop: everything but the real-process tests (no node processes)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n auto -m "not real and not long" -x

## scale for its own sake (minutes of CPU): the 200-node SWIM convergence; bench/RESULTS.md
test-long: $(STAMP)
	$(BIN)/python -m pytest -q -m long --durations=0

## Jepsen-style chaos (root): real nodes in network namespaces under seeded faults, a client
## workload and its checker; e.g. make chaos CHAOS_SEEDS="1 2" CHAOS_DURATION=1800 CHAOS_FAULTS=all
CHAOS_SEEDS ?= 1
CHAOS_DURATION ?= 60
CHAOS_NODES ?= 5
CHAOS_FAULTS ?= all
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos $(foreach s,$(CHAOS_SEEDS),--seed $(s)) --duration $(CHAOS_DURATION) \
		--nodes $(CHAOS_NODES) --faults $(CHAOS_FAULTS)

## the bounded run CI makes after the suite: three seeds, five nodes, every fault kind (~3-4 min)
chaos-ci: $(STAMP)
	$(BIN)/python -m tests.chaos --seed 1 --seed 2 --seed 3 --duration 40 --nodes 5 --faults all

## break each README guarantee on purpose, one at a time, and check a test catches it (a table)
mutate: $(STAMP)
	$(BIN)/python tests/mutate.py

## the replication simulator outside pytest: SCHEDULES per ack mode (MODES), JOBS processes, FAULTS=one
## (one failed node at a time, the README's promise) or any; prints schedules/second, the primary-ack
## loss window, and any failing seed with a shrunk trace. e.g. make sim SCHEDULES=1000000 JOBS=8
SCHEDULES ?= 10000
JOBS ?= 1
MODES ?= quorum,all,primary
FAULTS ?= one
sim: $(STAMP)
	$(BIN)/python -m tests.replication.sim --schedules $(SCHEDULES) --jobs $(JOBS) --modes $(MODES) --faults $(FAULTS)

bench: $(STAMP)
	$(BIN)/python bench/transport.py
	$(BIN)/python bench/recall.py
	$(BIN)/python bench/single_node.py
	$(BIN)/python bench/membership.py
	$(BIN)/python bench/failover.py
	$(BIN)/python bench/cluster.py --cache
	$(BIN)/python bench/redis_client.py
	$(BIN)/python bench/rebalance.py

## 3 nodes + a moto S3 server, 100,000 memories, restart on the disks and from the bucket
## (several minutes; QUICK=1 for a 3,000-memory smoke run)
bench-restart: $(STAMP)
	$(BIN)/python bench/restart.py $(if $(QUICK),--quick,)

## recall quality by meaning and by exact term (hashing vs wordllama, every fusion setting) beside
## recall latency with 1k, 10k and 100k memories in one agent (a few minutes; QUICK=1: 1k and 10k)
bench-recall-quality: $(STAMP)
	$(BIN)/python bench/recall_quality.py $(if $(QUICK),--quick,)

## the L1.5 cache's generation rule against a hostile simulated Redis: SEEDS seeds x 2 fault levels
cache-sim: $(STAMP)
	DAKERA_CACHE_SIM_SEEDS=$(or $(SEEDS),2000) $(BIN)/python -m pytest -q tests/cache/test_generation_sim.py

## hostile peers on every transport, SCALE times longer than in make test: the frame fuzzer on the
## memory and websocket transports, silent/slow/stalled/looping peers on udp and websocket, and the
## UDP fuzzer of tests/real/test_hostile_peer.py; bench/RESULTS.md records a run (SCALE=10)
fuzz-peers: $(STAMP)
	DAKERA_FUZZ_PEERS_SCALE=$(or $(SCALE),10) $(BIN)/python -m pytest -q --durations=0 \
		tests/transports/test_hostile_peers.py tests/transports/test_silent_peers.py \
		tests/real/test_slow_peers.py tests/real/test_hostile_peer.py

## schemathesis against a real node from its own /openapi.json with a bigger budget than make test's
## 3: EXAMPLES cases per operation and mode, the /v1/admin twins too, failures shrunk (bench/RESULTS.md)
EXAMPLES ?= 30
fuzz-api: $(STAMP)
	DAKERA_FUZZ_EXAMPLES=$(EXAMPLES) DAKERA_FUZZ_TWINS=1 DAKERA_FUZZ_SHRINK=1 $(BIN)/python -m pytest -q tests/real/test_openapi_fuzz.py

lint: $(STAMP)
	$(BIN)/ruff check dakera_actors transports tests bench examples
	$(BIN)/mypy dakera_actors transports
	$(BIN)/lint-imports
	$(BIN)/ruff check deploy/helm
	$(BIN)/python deploy/helm/check_chart.py
	deploy/prometheus/check.sh
	$(BIN)/hadolint deploy/docker/Dockerfile
	sed 's/^\([A-Z0-9_]*\)=$$/\1=lint-placeholder/' deploy/compose/.env.example > $(VENV)/compose-lint.env && docker-compose -f deploy/compose/docker-compose.yml --env-file $(VENV)/compose-lint.env --profile monitoring config -q

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis dakera-data dakera-cluster
