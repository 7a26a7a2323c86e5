"""Honest variants for the similarity measurement: per graded function, a pool of implementations
written by one author in deliberately different styles (loops, einsum, method chains, dict
dispatch, match, in-place buffers, explicit formulas, nested helpers), none of them the solution,
ALT_A or ALT_B of tests/grader_cases.py.

Variant i takes, for each function f with a pool of n bodies, body (i + s_f * (i // n)) mod n, with
a different stride s_f per function: two variants then share a function's body verbatim for about
one function in n, never for all of them. Sharing is verbatim, which is harsher than two honest
students ever are (they would differ in small ways); the single author flatters the other way.
"""
from __future__ import annotations

A, L, E, M, O = "minbert/attention.py", "minbert/layer.py", "minbert/embeddings.py", "minbert/model.py", \
    "minbert/optimizer.py"
P, H, PF, S, T = "heads/pooling.py", "heads/sentiment.py", "heads/paraphrase.py", "heads/similarity.py", \
    "training/multitask/tasks.py"
PC, D, G = "training/engine/pcgrad.py", "training/methods/distill_targets.py", "training/methods/gan.py"

POOLS: dict[tuple[str, str], list[str]] = {
    (A, "extended_attention_mask"): [
        """
        return ((attention_mask.to(dtype) - 1.0) * torch.finfo(dtype).max)[:, None, None, :]
        """, """
        out = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
        out[attention_mask == 0] = torch.finfo(dtype).min
        return out.unsqueeze(1).unsqueeze(2)
        """, """
        B, T = attention_mask.shape
        pad = attention_mask.reshape(B, 1, 1, T) == 0
        return torch.zeros(B, 1, 1, T, dtype=dtype, device=attention_mask.device).masked_fill(pad, torch.finfo(dtype).min)
        """, """
        lowest = torch.tensor(torch.finfo(dtype).min, dtype=dtype)
        keep = attention_mask[:, None, None, :] > 0
        return torch.where(keep, torch.zeros((), dtype=dtype), lowest)
        """, """
        rows = []
        for row in attention_mask.tolist():
            rows.append([0.0 if tok else torch.finfo(dtype).min for tok in row])
        return torch.tensor(rows, dtype=dtype, device=attention_mask.device).view(len(rows), 1, 1, -1)
        """],
    (A, "attention"): [
        """
        d = q.size(-1)
        logits = torch.matmul(q, k.transpose(-1, -2)) / d ** 0.5
        if mask is not None:
            logits += mask
        return torch.matmul(self.attn_dropout(logits.softmax(dim=-1)), v)
        """, """
        scale = 1.0 / math.sqrt(self.head_size)
        kt = k.permute(0, 1, 3, 2)
        s = (q * scale) @ kt
        s = s if mask is None else s + mask
        p = torch.exp(torch.log_softmax(s, -1))
        p = self.attn_dropout(p)
        return p @ v
        """, """
        B, H, T, D = q.shape
        s = torch.bmm(q.reshape(B * H, T, D), k.reshape(B * H, T, D).transpose(1, 2)).view(B, H, T, T)
        s = s.div(math.sqrt(D))
        if mask is not None:
            s = s.add(mask)
        a = self.attn_dropout(F.softmax(s, dim=3))
        return torch.bmm(a.reshape(B * H, T, T), v.reshape(B * H, T, D)).view(B, H, T, D)
        """, """
        return self.attn_dropout(torch.softmax(q.matmul(k.mT) * (1 / math.sqrt(self.head_size))
                                               + (mask if mask is not None else 0.0), dim=-1)).matmul(v)
        """, """
        scores = torch.einsum("bnid,bnjd->bnij", q / math.sqrt(q.shape[-1]), k)
        if mask is not None:
            scores = scores + mask.expand_as(scores)
        probs = F.softmax(scores, dim=-1)
        out = torch.einsum("bnij,bnjd->bnid", self.attn_dropout(probs), v)
        return out
        """],
    (L, "forward"): [
        """
        a = self.attn(x, mask)
        a = self.dropout(a)
        x = self.ln1(a + x)
        f = self.ffn_in(x)
        f = self.act(f)
        f = self.ffn_out(f)
        f = self.dropout(f)
        x = self.ln2(f + x)
        return x
        """, """
        def block(inp, fn, norm):
            return norm(inp + self.dropout(fn(inp)))
        h = block(x, lambda t: self.attn(t, mask), self.ln1)
        return block(h, lambda t: self.ffn_out(self.act(self.ffn_in(t))), self.ln2)
        """, """
        residual = x
        x = self.dropout(self.attn(x, mask=mask))
        x = self.ln1(residual + x)
        residual = x
        x = self.ffn_out(self.act(self.ffn_in(x)))
        return self.ln2(residual + self.dropout(x))
        """, """
        mid = self.ln1(torch.add(x, self.dropout(self.attn(x, mask))))
        ff = self.ffn_out(self.act(self.ffn_in(mid)))
        return self.ln2(torch.add(mid, self.dropout(ff)))
        """, """
        ffn = lambda t: self.dropout(self.ffn_out(self.act(self.ffn_in(t))))
        y = self.ln1(x + self.dropout(self.attn(x, mask)))
        return self.ln2(y + ffn(y))
        """],
    (E, "forward"): [
        """
        positions = torch.arange(T, device=input_ids.device).unsqueeze(0).expand(B, T)
        segments = token_type_ids if token_type_ids is not None else input_ids.new_zeros(B, T)
        e = self.word_embeddings(input_ids)
        e = e + self.position_embeddings(positions)
        e = e + self.token_type_embeddings(segments)
        e = self.ln(e)
        return self.dropout(e)
        """, """
        if token_type_ids is None:
            token_type_ids = torch.zeros(B, T, dtype=torch.long, device=input_ids.device)
        parts = [self.word_embeddings(input_ids), self.position_embeddings.weight[:T].unsqueeze(0),
                 self.token_type_embeddings(token_type_ids)]
        return self.dropout(self.ln(sum(parts)))
        """, """
        words = self.word_embeddings(input_ids)
        where = self.position_embeddings(torch.arange(0, T, dtype=torch.long, device=words.device))[None]
        kinds = (self.token_type_embeddings.weight[0] if token_type_ids is None
                 else self.token_type_embeddings(token_type_ids))
        return self.dropout(self.ln(words + where + kinds))
        """, """
        tt = torch.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        pid = torch.arange(T, device=input_ids.device).repeat(B, 1)
        h = torch.stack([self.word_embeddings(input_ids), self.position_embeddings(pid),
                         self.token_type_embeddings(tt)]).sum(0)
        h = self.ln(h)
        h = self.dropout(h)
        return h
        """, """
        emb = self.word_embeddings(input_ids).clone()
        emb += self.position_embeddings(torch.arange(T, device=input_ids.device))
        emb += self.token_type_embeddings(token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids))
        return self.dropout(self.ln(emb))
        """],
    (M, "forward"): [
        """
        first = x[:, 0, :]
        pooled = self.pooler(first).tanh()
        """, """
        pooled = torch.tanh(torch.addmm(self.pooler.bias, x[:, 0], self.pooler.weight.t()))
        """, """
        cls_vec = x.narrow(1, 0, 1).squeeze(1)
        pooled = nn.Tanh()(self.pooler(cls_vec))
        """],
    (O, "update"): [
        """
        wd = group["weight_decay"]
        m.lerp_(grad, 1 - beta1)
        v.mul_(beta2).add_(grad.pow(2), alpha=1 - beta2)
        denom = v.sqrt() + eps
        if group["correct_bias"]:
            bc1 = 1 - beta1 ** t
            bc2 = 1 - beta2 ** t
            p.add_(-(lr * math.sqrt(bc2) / bc1) * m / denom)
        else:
            p.add_(-lr * m / denom)
        if wd:
            p.mul_(1 - lr * wd)
        """, """
        state = [m, v]
        state[0].copy_(m * beta1 + grad * (1 - beta1))
        state[1].copy_(v * beta2 + grad ** 2 * (1 - beta2))
        correction = math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t) if group["correct_bias"] else 1.0
        update = state[0] / (state[1].sqrt() + eps)
        p.sub_(lr * correction * update)
        p.sub_(lr * group["weight_decay"] * p)
        """, """
        m[...] = beta1 * m + (1 - beta1) * grad
        v[...] = beta2 * v + (1 - beta2) * grad * grad
        alpha = lr
        if group["correct_bias"]:
            alpha = alpha * (1 - beta2 ** t) ** 0.5 / (1 - beta1 ** t)
        p[...] = p - alpha * m / (v ** 0.5 + eps)
        p[...] = p - lr * group["weight_decay"] * p
        """, """
        g2 = torch.square(grad)
        m.sub_((1 - beta1) * (m - grad))
        v.sub_((1 - beta2) * (v - g2))
        ratio = m / torch.add(torch.sqrt(v), eps)
        k = lr * math.sqrt(1 - beta2 ** t) / (1 - beta1 ** t) if group["correct_bias"] else lr
        p.sub_(k * ratio)
        decay = lr * group["weight_decay"]
        if decay != 0:
            p.sub_(decay * p)
        """, """
        for buf, beta, g in ((m, beta1, grad), (v, beta2, grad * grad)):
            buf.mul_(beta).add_(g * (1 - beta))
        scale = lr
        if group["correct_bias"]:
            scale *= math.sqrt(1.0 - beta2 ** t)
            scale /= 1.0 - beta1 ** t
        p.addcdiv_(m, torch.sqrt(v).add(eps), value=-scale)
        p.mul_(1.0 - lr * group["weight_decay"])
        """],
    (P, "mean_pool"): [
        """
        m = mask.unsqueeze(-1).bool()
        clean = torch.where(m, h, 0.0)
        n = m.sum(1).clamp_min(1)
        return clean.sum(1) / n
        """, """
        B, T, C = h.shape
        out = h.new_zeros(B, C)
        for i in range(B):
            idx = mask[i].nonzero().flatten()
            if idx.numel() > 0:
                out[i] = h[i, idx].mean(dim=0)
        return out
        """, """
        real = mask.to(torch.bool)
        zeroed = h.masked_fill(real.logical_not()[:, :, None], 0)
        lengths = real.sum(dim=-1, keepdim=True).to(h.dtype)
        return zeroed.sum(dim=-2) / torch.maximum(lengths, torch.ones_like(lengths))
        """, """
        w = mask.to(h.dtype)
        safe = h.masked_fill(w[..., None] == 0, 0)
        summed = torch.bmm(w.unsqueeze(1), safe).squeeze(1)
        return summed / w.sum(1, keepdim=True).clamp(min=1.0)
        """, """
        keep = mask != 0
        total = torch.zeros_like(h[:, 0])
        count = torch.zeros(h.shape[0], 1, dtype=h.dtype, device=h.device)
        for t in range(h.shape[1]):
            on = keep[:, t:t + 1]
            total = total + torch.where(on, h[:, t], torch.zeros_like(total))
            count = count + on.to(h.dtype)
        return total / count.clamp(min=1)
        """],
    (H, "forward"): [
        """
        if self.pooling == "mean":
            pooled = mean_pool(last_hidden_state, attention_mask)
        elif self.pooling == "pooler":
            pooled = pooler_output
        else:
            pooled = last_hidden_state[:, 0]
        logits = self.classifier(pooled)
        return logits
        """, """
        match self.pooling:
            case "cls":
                v = cls_pool(last_hidden_state)
            case "mean":
                v = mean_pool(last_hidden_state, attention_mask)
            case _:
                v = pooler_output
        return self.classifier(v)
        """, """
        choices = {"cls": cls_pool, "mean": lambda s: mean_pool(s, attention_mask), "pooler": lambda s: pooler_output}
        return self.classifier(choices[self.pooling](last_hidden_state))
        """, """
        features = pooler_output if self.pooling == "pooler" else (
            mean_pool(last_hidden_state, attention_mask) if self.pooling == "mean" else cls_pool(last_hidden_state))
        return self.classifier(features)
        """, """
        vec = last_hidden_state.select(1, 0)
        if self.pooling == "mean":
            vec = mean_pool(last_hidden_state, attention_mask)
        if self.pooling == "pooler":
            vec = pooler_output
        return self.classifier(vec)
        """],
    (PF, "pair_features"): [
        """
        diff = torch.abs(u - v)
        prod = u * v
        return torch.cat((u, v, diff, prod), dim=1)
        """, """
        return torch.concat([u, v, (v - u).abs(), v * u], -1)
        """, """
        feats = [u, v]
        feats.append((u - v).abs())
        feats.append(u.mul(v))
        return torch.cat(feats, dim=u.dim() - 1)
        """],
    (S, "cosine_score"): [
        """
        un = F.normalize(u, dim=-1, eps=eps)
        vn = F.normalize(v, dim=-1, eps=eps)
        return MAX_SCORE * F.relu((un * vn).sum(dim=-1))
        """, """
        dot = torch.einsum("bc,bc->b", u, v)
        norms = torch.linalg.vector_norm(u, dim=1) * torch.linalg.vector_norm(v, dim=1)
        return (dot / torch.clamp(norms, min=eps)).clamp(min=0) * MAX_SCORE
        """, """
        sim = torch.cosine_similarity(u, v, dim=1, eps=eps)
        return torch.where(sim > 0, sim, torch.zeros_like(sim)) * MAX_SCORE
        """],
    (T, "loss_from_output"): [
        """
        x = out.float()
        if task == "sst":
            return F.nll_loss(F.log_softmax(x, dim=-1), labels)
        elif task == "quora":
            y = labels.float()
            return (F.softplus(x) - x * y).mean()
        return (x - labels.float()).pow(2).mean()
        """, """
        losses = {"sst": lambda: F.cross_entropy(out.float(), labels),
                  "quora": lambda: F.binary_cross_entropy_with_logits(out.float(), labels.to(torch.float32)),
                  "sts": lambda: F.mse_loss(out.float(), labels.to(torch.float32))}
        return losses.get(task, losses["sts"])()
        """, """
        logits = out.to(torch.float32)
        if task == "sst":
            logp = logits - logits.logsumexp(dim=1, keepdim=True)
            return -logp[torch.arange(len(labels)), labels].mean()
        if task == "quora":
            return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        diff = logits - labels.to(logits.dtype)
        return (diff * diff).mean()
        """, """
        match task:
            case "sst":
                return nn.CrossEntropyLoss()(out.float(), labels)
            case "quora":
                return nn.BCEWithLogitsLoss()(out.float(), labels.float())
            case _:
                return nn.MSELoss()(out.float(), labels.float())
        """, """
        pred, gold = out.float(), labels
        if task != "sst":
            gold = gold.float()
        if task == "sst":
            loss = F.cross_entropy(pred, gold, reduction="sum") / pred.shape[0]
        elif task == "quora":
            loss = F.binary_cross_entropy_with_logits(pred, gold, reduction="none").mean()
        else:
            loss = F.mse_loss(pred, gold, reduction="sum") / gold.numel()
        return loss
        """],
    (PC, "project_conflicting"): [
        """
        out = []
        for i, g in enumerate(grads):
            cur = g.clone()
            perm = torch.randperm(K, generator=generator)
            for j in perm.tolist():
                if j == i:
                    continue
                other = grads[j]
                d = (cur * other).sum()
                if d < 0:
                    cur = cur - d / (other * other).sum() * other
            out.append(cur)
        return out
        """, """
        G = torch.stack(grads)
        P = G.clone()
        norms = (G * G).sum(dim=1)
        for i in range(K):
            for j in torch.randperm(K, generator=generator):
                j = int(j)
                if i != j:
                    c = P[i] @ G[j]
                    if c < 0:
                        P[i] -= c / norms[j] * G[j]
        return list(P.unbind(0))
        """, """
        result = [None] * K
        i = 0
        while i < K:
            vec = grads[i].clone()
            order = torch.randperm(K, generator=generator).tolist()
            order.remove(i)
            for j in order:
                inner = torch.dot(vec, grads[j])
                if inner.item() < 0:
                    vec.sub_(inner * grads[j] / grads[j].norm() ** 2)
            result[i] = vec
            i += 1
        return result
        """, """
        def project(i):
            g = grads[i].clone()
            for j in torch.randperm(K, generator=generator).tolist():
                if j != i and (g @ grads[j]) < 0:
                    g = g - (g @ grads[j]) / (grads[j] @ grads[j]) * grads[j]
            return g
        return [project(i) for i in range(K)]
        """, """
        sq = [torch.dot(g, g) for g in grads]
        projected = [g.clone() for g in grads]
        for i in range(K):
            perm = torch.randperm(K, generator=generator)
            for j in perm[perm != i].tolist():
                conflict = torch.dot(projected[i], grads[j])
                projected[i] = torch.where(conflict < 0, projected[i] - conflict / sq[j] * grads[j], projected[i])
        return projected
        """],
    (D, "annealed_lambda"): [
        """
        lam = step / total_steps
        if lam < 0:
            lam = 0.0
        if lam > 1:
            lam = 1.0
        return float(lam)
        """, """
        return float(sorted((0.0, step / total_steps, 1.0))[1])
        """, """
        return max(0.0, min(step / total_steps, 1.0))
        """],
    (D, "mixed_targets"): [
        """
        if task == "sst":
            target = torch.zeros_like(teacher)
            target[torch.arange(len(gold)), gold.long()] = 1.0
            return lam * target + (1 - lam) * teacher
        return lam * gold.to(teacher.dtype) + (1 - lam) * teacher
        """, """
        g = F.one_hot(gold.long(), num_classes=teacher.size(1)).type_as(teacher) if task == "sst" else gold.type_as(teacher)
        return teacher + lam * (g - teacher)
        """, """
        ref = gold.to(teacher.dtype)
        if task == "sst":
            ref = (torch.arange(teacher.shape[-1], device=gold.device)[None, :] == gold[:, None]).to(teacher.dtype)
        return torch.add(ref * lam, teacher * (1.0 - lam))
        """, """
        if task == "sst":
            hot = teacher.new_zeros(teacher.shape).scatter_(1, gold.long().unsqueeze(1), 1.0)
        else:
            hot = gold.to(teacher.dtype)
        mixed = lam * hot
        mixed = mixed + (1 - lam) * teacher
        return mixed
        """, """
        classes = teacher.shape[-1]
        if task == "sst":
            gold_dist = torch.eye(classes, dtype=teacher.dtype, device=teacher.device).index_select(0, gold.long())
        else:
            gold_dist = gold.to(teacher.dtype)
        return gold_dist * lam + teacher * (1 - lam)
        """],
    (D, "distill_loss"): [
        """
        o, t = output.to(torch.float32), target.to(torch.float32)
        if task == "sst":
            return torch.sum(-t * torch.log_softmax(o, dim=1)) / o.shape[0]
        if task == "quora":
            return (F.softplus(o) - o * t).mean()
        return ((o - t) ** 2).mean()
        """, """
        o = output.float()
        t = target.float()
        losses = {"sst": lambda: -(t * o.log_softmax(-1)).sum(-1).mean(),
                  "quora": lambda: F.binary_cross_entropy_with_logits(o, t),
                  "sts": lambda: F.mse_loss(o, t)}
        return losses[task]()
        """, """
        output = output.float()
        target = target.float()
        if task == "sst":
            return F.cross_entropy(output, target)
        elif task == "quora":
            return torch.mean(torch.clamp(output, min=0) - output * target + torch.log1p(torch.exp(-torch.abs(output))))
        else:
            return torch.mean(torch.square(output - target))
        """, """
        x, y = output.float(), target.float()
        match task:
            case "sst":
                logp = x - torch.logsumexp(x, dim=-1, keepdim=True)
                return -(y * logp).sum() / len(x)
            case "quora":
                return F.binary_cross_entropy_with_logits(x, y, reduction="sum") / y.numel()
            case _:
                return F.mse_loss(x, y, reduction="mean")
        """, """
        pred, soft = output.float(), target.float()
        if task == "sts":
            return F.mse_loss(pred, soft)
        if task == "quora":
            log_p = F.logsigmoid(pred)
            log_q = F.logsigmoid(-pred)
            return -(soft * log_p + (1 - soft) * log_q).mean()
        return torch.mean(torch.sum(soft * -F.log_softmax(pred, dim=1), dim=1))
        """],
    (G, "supervised_loss"): [
        """
        idx = labelled.nonzero(as_tuple=True)[0]
        if idx.numel() == 0:
            return logits.new_zeros(())
        return F.cross_entropy(logits[idx, :-1].float(), labels[idx])
        """, """
        n = int(labelled.sum().item())
        if n == 0:
            return (logits * 0).sum()
        logp = F.log_softmax(logits[labelled][:, :-1].float(), dim=-1)
        picked = logp.gather(1, labels[labelled].unsqueeze(1)).squeeze(1)
        return -picked.sum() / n
        """, """
        mask = labelled.bool()
        if mask.sum() == 0:
            return torch.tensor(0.0, device=logits.device)
        real = logits[mask]
        k = real.shape[1] - 1
        return nn.CrossEntropyLoss()(real[:, :k].float(), labels[mask])
        """, """
        if not bool(labelled.any()):
            return logits.float().sum() * 0
        chosen = logits[labelled].float()
        log_z = torch.logsumexp(chosen[:, :-1], dim=1)
        true = chosen[:, :-1].gather(1, labels[labelled].view(-1, 1)).view(-1)
        return (log_z - true).mean()
        """, """
        rows = [i for i in range(len(labelled)) if labelled[i]]
        if not rows:
            return torch.zeros((), dtype=torch.float32, device=logits.device)
        sel = torch.tensor(rows, dtype=torch.long, device=logits.device)
        return F.nll_loss(torch.log_softmax(logits.index_select(0, sel)[:, :-1].float(), -1), labels.index_select(0, sel))
        """],
    (G, "discriminator_loss"): [
        """
        lp_real = torch.log_softmax(real_logits.float(), dim=-1)
        lp_fake = torch.log_softmax(fake_logits.float(), dim=-1)
        real_term = torch.logsumexp(lp_real[:, :-1], dim=-1).mean()
        fake_term = lp_fake[:, -1].mean()
        total = supervised_loss(real_logits, labels, labelled) - real_term - fake_term
        if fake_labels is not None:
            total = total + F.cross_entropy(fake_logits[:, :-1].float(), fake_labels)
        return total
        """, """
        sup = supervised_loss(real_logits, labels, labelled)
        not_fake = _log_p_fake(real_logits.float())[1]
        is_fake = _log_p_fake(fake_logits.float())[0]
        loss = sup - torch.mean(not_fake) - torch.mean(is_fake)
        return loss if fake_labels is None else loss + F.cross_entropy(fake_logits[..., :-1].float(), fake_labels)
        """, """
        terms = [supervised_loss(real_logits, labels, labelled)]
        p_real = F.softmax(real_logits.float(), dim=1)[:, -1]
        p_fake = F.softmax(fake_logits.float(), dim=1)[:, -1]
        terms.append(-torch.log1p(-p_real).mean())
        terms.append(-torch.log(p_fake).mean())
        if fake_labels is not None:
            terms.append(nn.CrossEntropyLoss()(fake_logits[:, :-1].float(), fake_labels))
        return sum(terms)
        """, """
        real_lse = torch.logsumexp(real_logits.float(), 1)
        fake_lse = torch.logsumexp(fake_logits.float(), 1)
        log_real_is_real = torch.logsumexp(real_logits.float()[:, :-1], 1) - real_lse
        log_fake_is_fake = fake_logits.float()[:, -1] - fake_lse
        out = supervised_loss(real_logits, labels, labelled) - log_real_is_real.mean() - log_fake_is_fake.mean()
        if fake_labels is not None:
            k = fake_logits.shape[1] - 1
            out = out + F.nll_loss(F.log_softmax(fake_logits[:, :k].float(), 1), fake_labels)
        return out
        """, """
        bce_real = -_log_p_fake(real_logits.float())[1].sum() / real_logits.shape[0]
        bce_fake = -_log_p_fake(fake_logits.float())[0].sum() / fake_logits.shape[0]
        extra = 0.0
        if fake_labels is not None:
            extra = F.cross_entropy(fake_logits[:, :-1].float(), fake_labels, reduction="mean")
        return supervised_loss(real_logits, labels, labelled) + bce_real + bce_fake + extra
        """],
    (G, "generator_loss"): [
        """
        log_not_fake = torch.logsumexp(fake_logits.float()[:, :-1], -1) - torch.logsumexp(fake_logits.float(), -1)
        fm = torch.mean((real_features.detach().float().mean(0) - fake_features.float().mean(0)) ** 2)
        total = fm - log_not_fake.mean()
        if fake_labels is not None:
            total = total + F.cross_entropy(fake_logits[:, :-1].float(), fake_labels)
        return total
        """, """
        adv = -_log_p_fake(fake_logits.float())[1].mean()
        target = real_features.detach().float().mean(dim=0)
        current = fake_features.float().mean(dim=0)
        matching = F.mse_loss(current, target)
        loss = adv + matching
        if fake_labels is not None:
            loss += F.cross_entropy(fake_logits[:, :-1].float(), fake_labels)
        return loss
        """, """
        p = torch.softmax(fake_logits.float(), dim=-1)[:, -1]
        terms = [-torch.log1p(-p).mean()]
        mu_real = real_features.float().detach().mean(0)
        mu_fake = fake_features.float().mean(0)
        terms.append((mu_real - mu_fake).square().mean())
        if fake_labels is not None:
            terms.append(F.nll_loss(torch.log_softmax(fake_logits[:, :-1].float(), dim=-1), fake_labels))
        return sum(terms)
        """, """
        with torch.no_grad():
            anchor = real_features.float().mean(dim=0)
        diff = anchor - fake_features.float().mean(dim=0)
        feature_term = (diff * diff).sum() / diff.numel()
        _, log_ok = _log_p_fake(fake_logits.float())
        result = feature_term - log_ok.mean()
        if fake_labels is None:
            return result
        return result + nn.functional.cross_entropy(fake_logits[:, :-1].float(), fake_labels)
        """, """
        lp = F.log_softmax(fake_logits.float(), dim=1)
        adversarial = -torch.logsumexp(lp[:, :-1], dim=1).mean()
        gap = real_features.detach().float().mean(0).sub(fake_features.float().mean(0))
        loss = adversarial + gap.pow(2).mean()
        if fake_labels is not None:
            loss = loss + F.cross_entropy(lp[:, :-1], fake_labels)
        return loss
        """],
}

N_VARIANTS = 20


def variant(i: int) -> dict[tuple[str, str], str]:
    """The bodies of honest variant i (0 <= i < N_VARIANTS)."""
    out = {}
    for f, (key, pool) in enumerate(POOLS.items()):
        n = len(pool)
        out[key] = pool[(i + (f + 1) * (i // n)) % n]
    return out
