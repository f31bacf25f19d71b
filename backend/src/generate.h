// Generations: the callback API and the pull API (streams), on a conversation.
#pragma once

#include "model.h"

namespace llmodel {

// Ends an open stream's generation and cuts it loose from its conversation,
// which is going away (the stream's later calls fail with LLMODEL_ERR_CLOSED).
void detach_stream(llmodel_stream *stream);

// Calls that change a conversation's cache wait for its open stream to end:
// LLMODEL_ERR_BUSY while one is open.
llmodel_status check_no_stream(const llmodel_conversation *c);

} // namespace llmodel
