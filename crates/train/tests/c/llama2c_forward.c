/* A llama2.c forward pass in run.c's style, to check that the files `milbridge export` writes
 * are what run.c reads: same header, tensor order, RoPE and attention conventions.
 *
 *   llama2c_forward MODEL.bin STEPS TOKEN...
 *
 * Reads a legacy llama2.c checkpoint (the 7-int header, shared or unshared classifier), runs the
 * model token by token with a KV cache over the given prompt, printing one line per prompt
 * position:
 *
 *   logits POS V0 V1 ... V(vocab-1)
 *
 * then continues greedily (argmax, lowest id on ties) for STEPS tokens, or until seq_len:
 *
 *   greedy T1 T2 ...
 *
 * Exit status 1 with a message on stderr for a bad file or bad arguments. Plain C99, float math
 * like run.c: cc -O2 -o llama2c_forward llama2c_forward.c -lm
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
} Config;

typedef struct {
    float *token_embedding, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3, *rms_final,
        *wcls;
} Weights;

typedef struct {
    float *x, *xb, *xb2, *hb, *hb2, *q, *att, *logits, *key_cache, *value_cache;
} State;

static void die(const char *msg) {
    fprintf(stderr, "llama2c_forward: %s\n", msg);
    exit(1);
}

static void *alloc(size_t n) {
    void *p = calloc(n, sizeof(float));
    if (!p) die("out of memory");
    return p;
}

static void rmsnorm(float *o, const float *x, const float *w, int n) {
    float ss = 0.0f;
    for (int j = 0; j < n; j++) ss += x[j] * x[j];
    ss = 1.0f / sqrtf(ss / n + 1e-5f);
    for (int j = 0; j < n; j++) o[j] = w[j] * (ss * x[j]);
}

static void softmax(float *x, int n) {
    float max = x[0];
    for (int i = 1; i < n; i++) if (x[i] > max) max = x[i];
    float sum = 0.0f;
    for (int i = 0; i < n; i++) { x[i] = expf(x[i] - max); sum += x[i]; }
    for (int i = 0; i < n; i++) x[i] /= sum;
}

/* out[d] = W[d, n] @ x[n], W row-major [out, in] */
static void matmul(float *out, const float *x, const float *w, int n, int d) {
    for (int i = 0; i < d; i++) {
        float v = 0.0f;
        for (int j = 0; j < n; j++) v += w[(size_t)i * n + j] * x[j];
        out[i] = v;
    }
}

static float *forward(const Config *p, const Weights *w, State *s, int token, int pos) {
    int dim = p->dim, hidden = p->hidden_dim, head_size = dim / p->n_heads;
    int kv_dim = p->n_kv_heads * head_size, kv_mul = p->n_heads / p->n_kv_heads;
    float *x = s->x;
    memcpy(x, w->token_embedding + (size_t)token * dim, dim * sizeof(float));
    for (int l = 0; l < p->n_layers; l++) {
        rmsnorm(s->xb, x, w->rms_att + (size_t)l * dim, dim);
        size_t loff = (size_t)l * p->seq_len * kv_dim;
        float *k = s->key_cache + loff + (size_t)pos * kv_dim;
        float *v = s->value_cache + loff + (size_t)pos * kv_dim;
        matmul(s->q, s->xb, w->wq + (size_t)l * dim * dim, dim, dim);
        matmul(k, s->xb, w->wk + (size_t)l * dim * kv_dim, dim, kv_dim);
        matmul(v, s->xb, w->wv + (size_t)l * dim * kv_dim, dim, kv_dim);
        /* RoPE: rotate adjacent pairs of each head of q (and k) by pos * 10000^(-i/head_size) */
        for (int i = 0; i < dim; i += 2) {
            int pair_dim = i % head_size;
            float freq = 1.0f / powf(10000.0f, pair_dim / (float)head_size);
            float angle = pos * freq, c = cosf(angle), sn = sinf(angle);
            for (int which = 0; which < (i < kv_dim ? 2 : 1); which++) {
                float *vec = which == 0 ? s->q : k;
                float v0 = vec[i], v1 = vec[i + 1];
                vec[i] = v0 * c - v1 * sn;
                vec[i + 1] = v0 * sn + v1 * c;
            }
        }
        for (int h = 0; h < p->n_heads; h++) {
            const float *q = s->q + h * head_size;
            float *att = s->att + (size_t)h * p->seq_len;
            for (int t = 0; t <= pos; t++) {
                const float *kt = s->key_cache + loff + (size_t)t * kv_dim + (h / kv_mul) * head_size;
                float score = 0.0f;
                for (int i = 0; i < head_size; i++) score += q[i] * kt[i];
                att[t] = score / sqrtf((float)head_size);
            }
            softmax(att, pos + 1);
            float *xb = s->xb + h * head_size;
            memset(xb, 0, head_size * sizeof(float));
            for (int t = 0; t <= pos; t++) {
                const float *vt = s->value_cache + loff + (size_t)t * kv_dim + (h / kv_mul) * head_size;
                for (int i = 0; i < head_size; i++) xb[i] += att[t] * vt[i];
            }
        }
        matmul(s->xb2, s->xb, w->wo + (size_t)l * dim * dim, dim, dim);
        for (int i = 0; i < dim; i++) x[i] += s->xb2[i];
        rmsnorm(s->xb, x, w->rms_ffn + (size_t)l * dim, dim);
        matmul(s->hb, s->xb, w->w1 + (size_t)l * dim * hidden, dim, hidden);
        matmul(s->hb2, s->xb, w->w3 + (size_t)l * dim * hidden, dim, hidden);
        for (int i = 0; i < hidden; i++) {
            float g = s->hb[i];
            s->hb[i] = g * (1.0f / (1.0f + expf(-g))) * s->hb2[i];
        }
        matmul(s->xb, s->hb, w->w2 + (size_t)l * dim * hidden, hidden, dim);
        for (int i = 0; i < dim; i++) x[i] += s->xb[i];
    }
    rmsnorm(x, x, w->rms_final, dim);
    matmul(s->logits, x, w->wcls, dim, p->vocab_size);
    return s->logits;
}

int main(int argc, char **argv) {
    if (argc < 4) die("usage: llama2c_forward MODEL.bin STEPS TOKEN...");
    FILE *f = fopen(argv[1], "rb");
    if (!f) die("cannot open the model file");
    Config p;
    if (fread(&p, sizeof(Config), 1, f) != 1) die("file shorter than the header");
    int shared = p.vocab_size > 0;
    p.vocab_size = abs(p.vocab_size);
    if (p.dim <= 0 || p.hidden_dim <= 0 || p.n_layers <= 0 || p.n_heads <= 0 || p.n_kv_heads <= 0
        || p.vocab_size <= 0 || p.seq_len <= 0 || p.dim % p.n_heads || p.n_heads % p.n_kv_heads)
        die("bad header");
    int head_size = p.dim / p.n_heads, kv_dim = p.n_kv_heads * head_size;
    size_t L = p.n_layers, D = p.dim, H = p.hidden_dim, KV = kv_dim;
    size_t floats = p.vocab_size * D + L * (2 * D + 2 * D * D + 2 * KV * D + 3 * D * H) + D
                  + (size_t)p.seq_len * head_size + (shared ? 0 : p.vocab_size * D);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    if (size < 0 || (size_t)size != sizeof(Config) + floats * sizeof(float))
        die("file size does not match the header");
    fseek(f, sizeof(Config), SEEK_SET);
    float *data = alloc(floats);
    if (fread(data, sizeof(float), floats, f) != floats) die("short read");
    fclose(f);

    Weights w;
    float *ptr = data;
    w.token_embedding = ptr; ptr += p.vocab_size * D;
    w.rms_att = ptr; ptr += L * D;
    w.wq = ptr; ptr += L * D * D;
    w.wk = ptr; ptr += L * KV * D;
    w.wv = ptr; ptr += L * KV * D;
    w.wo = ptr; ptr += L * D * D;
    w.rms_ffn = ptr; ptr += L * D;
    w.w1 = ptr; ptr += L * H * D;
    w.w2 = ptr; ptr += L * D * H;
    w.w3 = ptr; ptr += L * H * D;
    w.rms_final = ptr; ptr += D;
    ptr += (size_t)p.seq_len * head_size / 2; /* freq_cis_real, unused */
    ptr += (size_t)p.seq_len * head_size / 2; /* freq_cis_imag, unused */
    w.wcls = shared ? w.token_embedding : ptr;

    State s;
    s.x = alloc(D); s.xb = alloc(D); s.xb2 = alloc(D); s.q = alloc(D);
    s.hb = alloc(H); s.hb2 = alloc(H);
    s.att = alloc((size_t)p.n_heads * p.seq_len);
    s.logits = alloc(p.vocab_size);
    s.key_cache = alloc(L * p.seq_len * KV);
    s.value_cache = alloc(L * p.seq_len * KV);

    int steps = atoi(argv[2]);
    int n_prompt = argc - 3;
    if (n_prompt > p.seq_len) die("prompt longer than seq_len");
    int token = 0, pos = 0;
    float *logits = NULL;
    for (; pos < n_prompt; pos++) {
        token = atoi(argv[3 + pos]);
        if (token < 0 || token >= p.vocab_size) die("prompt token outside the vocabulary");
        logits = forward(&p, &w, &s, token, pos);
        printf("logits %d", pos);
        for (int v = 0; v < p.vocab_size; v++) printf(" %.9g", logits[v]);
        printf("\n");
    }
    printf("greedy");
    for (int i = 0; i < steps; i++) {
        int best = 0;
        for (int v = 1; v < p.vocab_size; v++) if (logits[v] > logits[best]) best = v;
        printf(" %d", best);
        if (pos >= p.seq_len) break;
        logits = forward(&p, &w, &s, best, pos++);
    }
    printf("\n");
    free(data);
    return 0;
}
