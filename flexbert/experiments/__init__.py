"""Many runs: launcher, phases, sweeps, budget study, benchmarks, reports."""
