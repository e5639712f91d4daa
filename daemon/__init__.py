"""portfolio_state.daemon."""
