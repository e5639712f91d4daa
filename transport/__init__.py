"""portfolio_state.transport."""
