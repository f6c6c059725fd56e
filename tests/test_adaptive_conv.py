"""adaptive_conv: every backend against a float64 unfold reference written here."""
import logging
import shutil
import sys

import pytest
import torch
import torch.nn.functional as F

from segearth_ov.ops import adaptive_conv, adaptive_conv_backend, local_correlation
from segearth_ov.ops.build import find_cuda_home, jit_build, load_extension

ops_module = sys.modules['segearth_ov.ops.adaptive_conv']  # the package attribute is the function

CPU_BACKENDS = ['cpu', 'torch']


def reference(input, filters):
    """float64 ``sum_{i,j} k[b,y,x,i,j] * in[b,c,y+i,x+j]`` via F.unfold."""
    b, c, hp, wp = input.shape
    _, h, w, d, _ = filters.shape
    cols = F.unfold(input.double(), d).view(b, c, d * d, h, w)
    return torch.einsum('bcphw,bhwp->bchw', cols, filters.double().reshape(b, h, w, d * d))


def reference_grads(input, filters, grad_out):
    x = input.detach().double().requires_grad_()
    k = filters.detach().double().requires_grad_()
    reference(x, k).backward(grad_out.double())
    return x.grad, k.grad


def native_or_skip(backend):
    if backend == 'cpu' and load_extension('cpu') is None:
        pytest.skip('the C++ extension could not be built here (no compiler?)')


def make(b, c, h, w, d, dtype=torch.float64, device='cpu'):
    x = torch.randn(b, c, h + d - 1, w + d - 1, dtype=dtype, device=device)
    k = torch.randn(b, h, w, d, d, dtype=dtype, device=device)
    return x, k


@pytest.mark.parametrize('backend', CPU_BACKENDS)
@pytest.mark.parametrize('d,shape', [(3, (2, 5, 7, 13)), (7, (3, 6, 11, 17)), (11, (2, 9, 19, 21))])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_forward_and_gradients_match_reference(backend, d, shape, dtype):
    native_or_skip(backend)
    b, c, h, w = shape
    x, k = make(b, c, h, w, d, dtype)
    x.requires_grad_()
    k.requires_grad_()
    out = adaptive_conv(x, k, backend=backend)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out.double(), reference(x, k), **tol)
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    ref_x, ref_k = reference_grads(x, k, grad_out)
    torch.testing.assert_close(x.grad.double(), ref_x, **tol)
    torch.testing.assert_close(k.grad.double(), ref_k, **tol)


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_non_contiguous_inputs(backend):
    native_or_skip(backend)
    d = 5
    base = torch.randn(2, 9 + d - 1, 4, 15 + d - 1, dtype=torch.float64)
    x = base.permute(0, 2, 1, 3)                       # [2, 4, 13, 19], not contiguous
    k = torch.randn(2, 15, 9, d, d, dtype=torch.float64).transpose(1, 2)  # [2, 9, 15, d, d]
    assert not x.is_contiguous() and not k.is_contiguous()
    torch.testing.assert_close(adaptive_conv(x, k, backend=backend), reference(x, k))


def reference_correlation(input, query):
    """float64 ``sum_c query[b,c,y,x] * input[b,c,y+i,x+j]`` via F.unfold."""
    b, c, h, w = query.shape
    d = input.shape[2] - h + 1
    cols = F.unfold(input.double(), d).view(b, c, d, d, h, w)
    return torch.einsum('bcijhw,bchw->bhwij', cols, query.double())


@pytest.mark.parametrize('backend', CPU_BACKENDS)
@pytest.mark.parametrize('d,shape', [(3, (2, 5, 7, 13)), (11, (2, 32, 12, 19))])
def test_local_correlation_and_its_gradients(backend, d, shape):
    native_or_skip(backend)
    b, c, h, w = shape
    x = torch.randn(b, c, h + d - 1, w + d - 1, dtype=torch.float64, requires_grad=True)
    q = torch.randn(b, c, h, w, dtype=torch.float64, requires_grad=True)
    out = local_correlation(x, q, backend=backend)
    ref_x = x.detach().clone().requires_grad_()
    ref_q = q.detach().clone().requires_grad_()
    ref = reference_correlation(ref_x, ref_q)
    torch.testing.assert_close(out, ref)
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(x.grad, ref_x.grad)
    torch.testing.assert_close(q.grad, ref_q.grad)


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_local_correlation_gradcheck(backend):
    native_or_skip(backend)
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    q = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: local_correlation(a, b, backend=backend), (x, q))


def test_local_correlation_bad_input():
    with pytest.raises(ValueError, match='input must be \\[B, C, H\\+d-1, W\\+d-1\\] with d odd'):
        local_correlation(torch.randn(1, 2, 7, 7), torch.randn(1, 2, 4, 4))   # d = 4
    with pytest.raises(ValueError, match='input must be'):
        local_correlation(torch.randn(1, 2, 6, 8), torch.randn(1, 2, 4, 4))   # d differs per axis
    with pytest.raises(ValueError, match='must be rank 4'):
        local_correlation(torch.randn(2, 6, 6), torch.randn(2, 4, 4))
    with pytest.raises(TypeError, match='input is torch.float32, query torch.float64'):
        local_correlation(torch.randn(1, 2, 6, 6), torch.randn(1, 2, 4, 4, dtype=torch.float64))


def test_native_forward_writes_every_output_element():
    native_or_skip('cpu')
    ext = load_extension('cpu')
    for dtype in (torch.float32, torch.float64):
        x, k = make(2, 7, 9, 23, 7, dtype)   # 7 channels: a 4-block and a remainder
        out = torch.full((2, 7, 9, 23), float('nan'), dtype=dtype)
        ext.forward_out(x, k, out)
        assert not out.isnan().any()
        torch.testing.assert_close(out.double(), reference(x, k), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_gradcheck(backend):
    native_or_skip(backend)
    x, k = make(2, 3, 4, 5, 3)
    x.requires_grad_()
    k.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: adaptive_conv(a, b, backend=backend), (x, k))


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_types_accumulate_in_float32_on_cpu(dtype):
    native_or_skip('cpu')
    x, k = make(1, 4, 10, 12, 11, torch.float32)
    out = adaptive_conv(x.to(dtype), k.to(dtype), backend='cpu')
    assert out.dtype == dtype
    expected = reference(x.to(dtype), k.to(dtype))
    torch.testing.assert_close(out.double(), expected, rtol=2e-2, atol=2e-1)


@pytest.mark.parametrize('x_shape,k_shape,error,message', [
    ((2, 3, 9, 9), (2, 7, 7, 3), ValueError, 'filters must be \\[B, H, W, d, d\\], got rank 4'),
    ((3, 9, 9), (2, 7, 7, 3, 3), ValueError,
     'input must be \\[B, C, H\\+d-1, W\\+d-1\\], got rank 3'),
    ((2, 3, 9, 9), (1, 7, 7, 3, 3), ValueError, 'batch mismatch, input has 2, filters has 1'),
    ((2, 3, 9, 9), (2, 7, 7, 5, 5), ValueError,
     'input spatial size 9x9 must be filters size plus d-1 = 11x11'),
    ((2, 3, 10, 10), (2, 7, 7, 4, 4), ValueError, 'kernel size d must be odd, got 4'),
    ((2, 3, 9, 9), (2, 7, 7, 3, 5), ValueError, 'filters must be square'),
])
def test_bad_shapes(x_shape, k_shape, error, message):
    with pytest.raises(error, match=message):
        adaptive_conv(torch.randn(x_shape), torch.randn(k_shape))


def test_mixed_dtypes_and_integer_tensors():
    x, k = make(1, 2, 4, 4, 3, torch.float32)
    with pytest.raises(TypeError, match='input is torch.float32, filters torch.float64'):
        adaptive_conv(x, k.double())
    with pytest.raises(TypeError, match='floating-point tensors needed'):
        adaptive_conv(x.long(), k.long())


def test_mixed_devices():
    x, k = make(1, 2, 4, 4, 3, torch.float32)
    with pytest.raises(ValueError, match='input is on cpu, filters on meta'):
        adaptive_conv(x, k.to('meta'))
    with pytest.raises(ValueError, match='input is on meta, query on cpu'):
        local_correlation(x.to('meta'), torch.randn(1, 2, 4, 4))


@pytest.mark.slow
def test_cpu_extension_jit_builds_from_source(tmp_path):
    """The first-use path: compile csrc/ with ninja into a fresh cache folder."""
    if shutil.which('c++') is None:
        pytest.skip('no C++ compiler on this machine')
    ext = jit_build('cpu', tmp_path / 'cpu')
    x, k = make(2, 5, 6, 9, 3)
    torch.testing.assert_close(ext.forward(x, k), reference(x, k))


def test_native_checks_name_the_argument():
    native_or_skip('cpu')
    ext = load_extension('cpu')
    x, k = make(1, 2, 4, 4, 3)
    with pytest.raises(RuntimeError, match='kernel size d must be odd'):
        ext.forward(torch.randn(1, 2, 7, 7), torch.randn(1, 4, 4, 4, 4))
    with pytest.raises(RuntimeError,
                       match='grad_out must be \\[B, C, H, W\\] with B, H, W of filters'):
        ext.grad_input(torch.randn(1, 2, 5, 4, dtype=torch.float64), k)
    with pytest.raises(RuntimeError,
                       match='input must be \\[B, C, H\\+d-1, W\\+d-1\\] \\(d odd\\)'):
        ext.grad_filters(torch.randn(1, 2, 4, 4, dtype=torch.float64),
                         torch.randn(1, 2, 7, 6, dtype=torch.float64))
    with pytest.raises(RuntimeError, match='out must be \\[B, C, H, W\\]'):
        ext.forward_out(x, k, torch.empty(1, 2, 4, 5, dtype=torch.float64))


def test_backend_choice_and_override(monkeypatch, caplog):
    monkeypatch.setenv('SEGEARTH_OV_JBU_BACKEND', 'torch')
    assert adaptive_conv_backend('cpu') == 'torch'
    monkeypatch.setenv('SEGEARTH_OV_JBU_BACKEND', 'cuda')
    with pytest.raises(ValueError, match='SEGEARTH_OV_JBU_BACKEND=cuda cannot run cpu tensors'):
        adaptive_conv_backend('cpu')
    monkeypatch.setenv('SEGEARTH_OV_JBU_BACKEND', 'triton')
    with pytest.raises(ValueError, match="'triton'; choose one of cuda, cpu, torch"):
        adaptive_conv_backend('cpu')
    monkeypatch.delenv('SEGEARTH_OV_JBU_BACKEND')
    expected = 'cpu' if load_extension('cpu') is not None else 'torch'
    assert adaptive_conv_backend('cpu') == expected
    monkeypatch.setattr(ops_module, '_logged', set())
    x, k = make(1, 1, 3, 3, 3)
    with caplog.at_level(logging.INFO, logger='segearth_ov'):
        adaptive_conv(x, k)
        adaptive_conv(x, k)
    lines = [r.message for r in caplog.records if 'adaptive_conv' in r.message]
    assert lines == [f'adaptive_conv: cpu tensors use the {expected} backend']


def test_missing_native_backend_falls_back(monkeypatch):
    monkeypatch.setattr('segearth_ov.ops.build._loaded', {'cpu': None, 'cuda': None})
    monkeypatch.delenv('SEGEARTH_OV_JBU_BACKEND', raising=False)
    assert adaptive_conv_backend('cpu') == 'torch'
    with pytest.raises(RuntimeError, match='the cpu adaptive_conv extension is not available'):
        adaptive_conv(*make(1, 1, 3, 3, 3), backend='cpu')


def test_failed_build_is_reported_once_and_falls_back(monkeypatch, caplog):
    calls = []

    def broken(backend, *a, **k):
        calls.append(backend)
        raise RuntimeError('g++: fatal error: simulated')
    monkeypatch.setattr('segearth_ov.ops.build._loaded', {})
    monkeypatch.setattr('segearth_ov.ops.build.jit_build', broken)
    monkeypatch.setattr('importlib.import_module',
                        lambda name: (_ for _ in ()).throw(ImportError(name)))
    with caplog.at_level(logging.WARNING, logger='segearth_ov'):
        assert load_extension('cpu') is None
        assert load_extension('cpu') is None
    assert calls == ['cpu']
    assert 'could not be built (RuntimeError: g++: fatal error: simulated)' in caplog.text


def _cuda_build_reason():
    if torch.version.cuda is None:
        return 'torch is not a CUDA build'
    if shutil.which('nvcc') is None and find_cuda_home() is None:
        return 'no nvcc / CUDA toolkit on this machine'
    return None


@pytest.mark.skipif(_cuda_build_reason() is not None, reason=str(_cuda_build_reason()))
def test_cuda_sources_compile(tmp_path):
    """Compile-only on machines without a GPU: the installed module, else a fresh build."""
    try:
        import segearth_ov._ext_cuda as ext
    except ImportError:
        ext = jit_build('cuda', tmp_path / 'cuda')
    for name in ('forward', 'forward_out', 'grad_input', 'grad_filters'):
        assert callable(getattr(ext, name))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('d', [3, 7, 11])
def test_cuda_matches_reference(dtype, d):
    if load_extension('cuda') is None:
        pytest.fail('CUDA device present but the CUDA extension is unavailable')
    x, k = make(2, 11, 13, 17, d, torch.float64, 'cuda')
    xs, ks = x.to(dtype).requires_grad_(), k.to(dtype).requires_grad_()
    out = adaptive_conv(xs, ks, backend='cuda')
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    ref = reference(xs.detach().cpu(), ks.detach().cpu())
    ref_x, ref_k = reference_grads(xs.cpu(), ks.cpu(), grad_out.cpu())
    tol = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 5e-2,
           torch.bfloat16: 3e-1}[dtype]
    scale = lambda t: tol * max(1.0, t.abs().max().item())
    for got, exp in ((out, ref), (xs.grad, ref_x), (ks.grad, ref_k)):
        assert (got.double().cpu() - exp).abs().max() <= scale(exp)
    poisoned = torch.full_like(out, float('nan'))
    load_extension('cuda').forward_out(xs.detach(), ks.detach(), poisoned)
    assert not poisoned.isnan().any()
