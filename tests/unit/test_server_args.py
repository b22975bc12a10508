"""The local server's command line, built from the spec: what every deployment shares and what it sets."""

from __future__ import annotations

from pipelines import spec
from tools.server.endpoints import Endpoints, _ephemeral_ports, free_port
from tools.server.triton import ServerOptions, command, endpoint_args


def test_fixed_flags_come_from_the_spec() -> None:
    args = command(ServerOptions())
    assert all(flag in args for flag in spec.SERVER_FLAGS)


def test_gpu_variant_sizes_one_cuda_pool_per_gpu() -> None:
    for gpus in (1, 2):
        args = endpoint_args(ServerOptions(variant=spec.Variant.GPU, gpus=gpus))
        pools = [a for a in args if "cuda-memory-pool" in a]
        assert pools == [f"--cuda-memory-pool-byte-size={g}:{spec.CUDA_MEMORY_POOL_BYTES}" for g in range(gpus)]
    largest = max(t.gpu.max_batch_size for t in spec.TIERS)
    assert spec.CUDA_MEMORY_POOL_BYTES == largest * spec.MAX_IMAGE_PIXELS * 3, "one largest batch of ORIGINAL"
    cpu = endpoint_args(ServerOptions(variant=spec.Variant.CPU))
    assert not [a for a in cpu if "cuda" in a] and f"--model-config-name={spec.Variant.CPU.config_name}" in cpu


def test_access_control() -> None:
    keyed = endpoint_args(ServerOptions(api_key="k3y"))
    assert f"--grpc-restricted-protocol=inference,model-repository,model-config,shared-memory,statistics,trace," \
           f"logging:{spec.API_KEY_HEADER}=k3y" in keyed  # fmt: skip
    open_ = endpoint_args(ServerOptions())
    locks = [a for a in open_ if "restricted" in a]
    assert len(locks) == 2 and all(a.split("=")[1].startswith("shared-memory:") for a in locks)
    assert all("=k3y" not in a for a in open_), "without a key, shared memory is locked with a random secret"


def test_free_ports_are_outside_the_ephemeral_range() -> None:
    ephemeral = _ephemeral_ports()
    e = Endpoints.free()
    assert len({e.http, e.grpc, e.metrics}) == 3
    assert not {e.http, e.grpc, e.metrics} & set(ephemeral)
    assert free_port() not in ephemeral
