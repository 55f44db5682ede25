"""Allocation: which rack on which source, every single source loss survivable.

Pure functions of data (numpy/scipy); nothing here knows of serial ports or the fleet.

- problem.py: the problem (racks, sources, policy) as validated arrays; `Problem.from_site`
- milp.py: the exact method (HiGHS through highspy, with MIP starts): its stages and time budget;
  milp_model.py its models (the allocation MILP, the floor model of the moves);
  milp_bounds.py the LP bound and the least load to shed
- heuristic.py: the fast method for large sites (greedy plus local search)
- naive.py: the naive rebalancer of the original concept, a peer for benchmarks
- solution.py: what a method returns, and the shortfalls when N-1 cannot be covered
- check.py: an independent checker that simulates every single source loss
- plan.py: the plan: moves in a safe order, contingency tables, utilisation, coverage
- generate.py: generated tight sites for the tests and the benchmark
- plan_inputs.py: what the allocation is told of a live site: racks' conservative draw, sources' risk
"""
