"""pyg_infdiff.models"""
