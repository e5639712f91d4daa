"""portfolio_state.analytics."""
