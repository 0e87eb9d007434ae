"""Classical peak finders: ``threshold``, ``peakfinder8``, ``dispersion`` and ``dispersion_extended``.

Build them by name with :func:`braggml.finder.make_finder`; the modules are imported only when a finder
is asked for. Each finder's ``last_report`` (:class:`braggml.classical._common.FindReport`) tells what
happened to the candidates of the last frame: rejections by cause (``ice_ring``, ``powder_ring``,
``masked``, ``too_small``, ...), which returned peaks touch the mask, and the gain used.

Shared by every finder: :mod:`~braggml.classical.rings` (ice and powder rings) and
:mod:`~braggml.classical.hotpixels` (a run's hot pixels, found from its frames and masked in all of them).
"""
