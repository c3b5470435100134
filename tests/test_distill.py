import pytest
import torch
import torch.nn.functional as F

from amc.compress.policy import CompressionPolicy
from amc.compress.student import apply_policy
from amc.models import create_model
from amc.train.distill import finetune, kd_loss, kd_steps, kd_stream, recalibrate_bn
from amc.train.loop import evaluate_accuracy
from amc.train.settings import FinetuneSettings


def test_kd_loss_is_cross_entropy_at_alpha_zero():
    s, t, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    assert kd_loss(s, t, y, alpha=0.0).item() == pytest.approx(F.cross_entropy(s, y).item(), rel=1e-6)


def test_kd_loss_is_zero_when_student_matches_teacher_at_alpha_one():
    s, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    assert kd_loss(s, s.clone(), y, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(s, s + torch.randn(8, 5), y, alpha=1.0).item() > 0


def test_kd_loss_scales_soft_term_by_temperature_squared():
    s, t, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    kl = F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean")
    assert kd_loss(s, t, y, alpha=1.0, temperature=2.0).item() == pytest.approx(4 * kl.item(), rel=1e-5)


def test_bn_recalibration_re_estimates_stats_and_restores_momentum(synthetic):
    model = create_model("resnet8", num_classes=4)
    bn = model.bn1
    bn.running_mean.fill_(100.0)
    recalibrate_bn(model, synthetic, batches=2, batch_size=16)
    assert bn.momentum == 0.1
    assert bn.running_mean.abs().max().item() < 100.0


def _trained_teacher(data):
    torch.manual_seed(0)
    teacher = create_model("resnet8", num_classes=4)
    optimizer = torch.optim.SGD(teacher.parameters(), lr=0.05, momentum=0.9)
    for _ in range(6):
        for x, y in data.batches("train", 32, train=True, generator=torch.Generator().manual_seed(0)):
            optimizer.zero_grad()
            F.cross_entropy(teacher(x), y).backward()
            optimizer.step()
    return teacher.eval()


def test_finetune_recovers_a_pruned_student_and_reports_every_epoch(synthetic):
    teacher = _trained_teacher(synthetic)
    assert evaluate_accuracy(teacher, synthetic, "val") > 0.9
    student = apply_policy(teacher, CompressionPolicy(keep_ratios={"conv1": 0.25, "layer3.0.conv2": 0.25}), (3, 16, 16))
    recalibrate_bn(student, synthetic, batches=4, batch_size=32)
    before = evaluate_accuracy(student, synthetic, "val")
    states = []
    settings = FinetuneSettings(epochs=3, batch_size=32, lr=0.02, precision="fp32")
    finetune(student, teacher, synthetic, settings, on_epoch_end=lambda e, s: states.append(e), show_progress=False)
    assert states == [1, 2, 3]
    after = evaluate_accuracy(student, synthetic, "val")
    assert after >= before and after > 0.8


def test_finetune_resumes_to_the_same_weights(synthetic):
    teacher = _trained_teacher(synthetic)
    policy = CompressionPolicy(keep_ratios={"conv1": 0.5})
    settings = FinetuneSettings(epochs=2, batch_size=32, lr=0.02, precision="fp32")

    straight = apply_policy(teacher, policy, (3, 16, 16))
    finetune(straight, teacher, synthetic, settings, show_progress=False)

    interrupted = apply_policy(teacher, policy, (3, 16, 16))
    saved = {}

    def stop_after_first(epoch, state):
        saved.update(state=state, weights={k: v.clone() for k, v in interrupted.state_dict().items()})
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(interrupted, teacher, synthetic, settings, on_epoch_end=stop_after_first, show_progress=False)
    resumed = apply_policy(teacher, policy, (3, 16, 16))
    resumed.load_state_dict(saved["weights"])
    finetune(resumed, teacher, synthetic, settings, resume_state=saved["state"], show_progress=False)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


@pytest.mark.parametrize("steps", [2, 7])  # within the first epoch, and across epochs
def test_the_rewards_kd_steps_on_cached_batches_train_as_finetune_does(synthetic, steps, capsys):
    teacher = _trained_teacher(synthetic)
    policy = CompressionPolicy(keep_ratios={"conv1": 0.5, "layer2.0.conv1": 0.5})
    settings = FinetuneSettings(steps=steps, batch_size=32, lr=0.01, precision="fp32", seed=3)
    reference = apply_policy(teacher, policy, (3, 16, 16))
    finetune(reference, teacher, synthetic, settings, show_progress=False)
    capsys.readouterr()
    cached = list(kd_stream(teacher, synthetic, settings, torch.device("cpu")))
    assert len(cached) == steps
    for _ in range(2):  # the same cached batches serve every candidate
        student = apply_policy(teacher, policy, (3, 16, 16))
        kd_steps(student, cached, settings, torch.device("cpu"))
        for a, b in zip(reference.state_dict().values(), student.state_dict().values(), strict=True):
            assert torch.allclose(a.float(), b.float(), atol=1e-6)
    assert capsys.readouterr().err == ""  # no progress bar, no validation pass


def test_the_fine_tune_optimizer_follows_the_teacher_unless_chosen():
    from amc.train.settings import teacher_optimizer

    vit_teacher = {"train_config": {"optimizer": "adamw", "lr": 1e-3}}
    auto = FinetuneSettings().resolved(teacher_optimizer(vit_teacher))
    assert (auto.optimizer, auto.lr, auto.weight_decay) == ("adamw", 5e-4, 0.05)
    cnn = FinetuneSettings().resolved(teacher_optimizer({"train_config": {"optimizer": "sgd"}}))
    assert (cnn.optimizer, cnn.lr, cnn.weight_decay) == ("sgd", 0.05, 5e-4)
    assert FinetuneSettings().resolved(teacher_optimizer({})).optimizer == "sgd"  # a checkpoint that does not say
    chosen = FinetuneSettings(optimizer="sgd", lr=0.1).resolved("adamw")
    assert (chosen.optimizer, chosen.lr, chosen.weight_decay) == ("sgd", 0.1, 5e-4)


def test_a_vit_student_fine_tunes_with_adamw(synthetic):
    torch.manual_seed(0)
    teacher = create_model("vit_tiny", num_classes=4, image_size=16, dim=32, depth=2, num_heads=4).eval()
    student = apply_policy(teacher, CompressionPolicy(keep_ratios={"blocks.0.attn.qkv": 0.5}), (3, 16, 16))
    settings = FinetuneSettings(steps=4, batch_size=16, optimizer="adamw", precision="fp32")
    before = [p.detach().clone() for p in student.parameters()]
    finetune(student, teacher, synthetic, settings, show_progress=False)
    assert all(torch.isfinite(p).all() for p in student.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))


def test_a_fine_tune_reports_the_settings_it_ran_with(synthetic):
    teacher = create_model("resnet8", num_classes=4).eval()
    student = apply_policy(teacher, CompressionPolicy(keep_ratios={"conv1": 0.5}), (3, 16, 16))
    ran = finetune(student, teacher, synthetic, FinetuneSettings(steps=1, batch_size=16), show_progress=False)
    assert ran["settings"]["optimizer"] == "sgd" and ran["settings"]["lr"] == 0.05
    assert ran["settings"]["precision"] in ("bf16", "fp32")  # "auto" resolved for this machine
