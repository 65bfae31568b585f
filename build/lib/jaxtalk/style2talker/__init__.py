"""Style2Talker: Style-E (expression diffusion), audio2exp, and Style-A (DualStyleGAN + VToonify + PIRender motion).

Submodules are imported explicitly (e.g. `from jaxtalk.style2talker.stylegan2 import Generator`), so importing
the package stays cheap.
"""
