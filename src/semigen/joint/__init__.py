"""(3) joint: the rounds. `fit` runs the whole loop as a declared list of stages; `images`
chooses the generated images a round's classifier learns from, by what they teach (the
classification accuracy score, which `evaluation.teaching` measures for the report too);
`feature_step` spreads the features' labels again with them as labeled points."""
