"""pyg_infdiff.diffusion"""
