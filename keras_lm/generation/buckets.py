"""Shape buckets: few compiled shapes, and cache sizes that follow the real length."""


def next_power_of_two(n: int, minimum: int = 1) -> int:
    size = max(minimum, 1)
    while size < n:
        size *= 2
    return size


def prompt_bucket(length: int) -> int:
    """Prompt width after left padding: a power of two, at least 8."""
    return next_power_of_two(length, minimum=8)


def cache_bucket(length: int) -> int:
    """KV-cache capacity for `length` slots: a power of two, at least 64."""
    return next_power_of_two(length, minimum=64)
