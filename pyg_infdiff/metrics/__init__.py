"""pyg_infdiff.metrics"""
