"""Security-repair reward: bandit in-process + our taint rules, similarity, sandboxed functional tests."""
