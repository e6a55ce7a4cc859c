"""pyg_infdiff.training"""
