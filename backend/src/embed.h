// Embedders: embedding contexts over a model's weights.
#pragma once

#include "model.h"

namespace llmodel {

// Frees an embedder's context (the model is being released; life_mu held).
void release_embedder(llmodel_embedder *em);

} // namespace llmodel
