
TEST_CASE("shape and index ops: registered with checker samples, their VJP ops too",
          "[ops][shape-index][registry]") {
  for (const char* name :
       {"cat", "slice", "slice_backward", "expand", "expand_backward", "repeat", "repeat_backward",
        "flip", "flip_backward", "roll", "roll_backward", "tril", "triu", "pad", "pad_backward",
        "index_select", "index_select_backward", "embedding", "embedding_backward", "gather",
        "scatter_add"}) {
    INFO(name);
    const tg::OpInfo info = tg::find_op(name);
    REQUIRE(info.samples);
    CHECK_FALSE(info.samples().empty());
    CHECK(info.differentiable_vjp);
  }
}
