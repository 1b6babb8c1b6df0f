from yoyo import step
steps = [step("SELECT 1")]
