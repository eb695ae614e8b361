"""Session-wide pytest plugins: real servers the integration tests run against."""

pytest_plugins = [
    "tests.support.redis_fixtures",
    "tests.support.kube_fixtures",
    "tests.support.cluster_fixtures",
]
