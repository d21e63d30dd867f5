/*
 * matmul.c - cached oneDNN matmul primitives for row-major f32 products
 * with optional transposes and accumulation. Transposes are expressed as
 * strides, so no data is copied; accumulation is a `sum` post-op.
 */
#include <stdlib.h>
#include <string.h>

#include <dnnl.h>

#include "featcache/featcache.h"
#include "train/matmul.h"

#define MM_CACHE 32

typedef struct mm_entry {
	size_t M, N, K;
	int ta, tb, acc;
	dnnl_primitive_t prim;
	dnnl_memory_t a, b, c;
	uint64_t last_use;
} mm_entry;

struct fci_mm {
	dnnl_engine_t eng;
	dnnl_stream_t stream;
	mm_entry cache[MM_CACHE];
	int n;
	uint64_t tick;
	char impl[128];
};

static void entry_free(mm_entry *e)
{
	if (e->prim)
		dnnl_primitive_destroy(e->prim);
	if (e->a)
		dnnl_memory_destroy(e->a);
	if (e->b)
		dnnl_memory_destroy(e->b);
	if (e->c)
		dnnl_memory_destroy(e->c);
	memset(e, 0, sizeof *e);
}

int fci_mm_new(fci_mm **out)
{
	fci_mm *mm = calloc(1, sizeof *mm);
	*out = NULL;
	if (!mm)
		return FC_ERR_NOMEM;
	if (dnnl_engine_create(&mm->eng, dnnl_cpu, 0) != dnnl_success ||
	    dnnl_stream_create(&mm->stream, mm->eng, dnnl_stream_default_flags) != dnnl_success) {
		fci_mm_free(mm);
		return FC_ERR_INTERNAL;
	}
	*out = mm;
	return 0;
}

void fci_mm_free(fci_mm *mm)
{
	if (!mm)
		return;
	for (int i = 0; i < mm->n; i++)
		entry_free(&mm->cache[i]);
	if (mm->stream)
		dnnl_stream_destroy(mm->stream);
	if (mm->eng)
		dnnl_engine_destroy(mm->eng);
	free(mm);
}

const char *fci_mm_impl(const fci_mm *mm)
{
	return mm->impl;
}

/* A (rows, cols) view of a row-major matrix, read transposed when `t`. */
static dnnl_status_t view(dnnl_memory_desc_t *md, size_t rows, size_t cols, int t)
{
	dnnl_dims_t dims = { (dnnl_dim_t)rows, (dnnl_dim_t)cols };
	dnnl_dims_t strides = { t ? 1 : (dnnl_dim_t)cols, t ? (dnnl_dim_t)rows : 1 };
	return dnnl_memory_desc_init_by_strides(md, 2, dims, dnnl_f32, strides);
}

static int entry_create(fci_mm *mm, mm_entry *e)
{
	dnnl_memory_desc_t a_md, b_md, c_md;
	dnnl_matmul_desc_t desc;
	dnnl_primitive_attr_t attr = NULL;
	dnnl_post_ops_t po = NULL;
	dnnl_primitive_desc_t pd = NULL;
	int err = FC_ERR_INTERNAL;

	if (view(&a_md, e->M, e->K, e->ta) || view(&b_md, e->K, e->N, e->tb) ||
	    view(&c_md, e->M, e->N, 0) || dnnl_matmul_desc_init(&desc, &a_md, &b_md, NULL, &c_md))
		goto out;
	if (dnnl_primitive_attr_create(&attr))
		goto out;
	if (e->acc) {
		if (dnnl_post_ops_create(&po) || dnnl_post_ops_append_sum(po, 1.0f) ||
		    dnnl_primitive_attr_set_post_ops(attr, po))
			goto out;
	}
	if (dnnl_primitive_desc_create(&pd, &desc, attr, mm->eng, NULL) ||
	    dnnl_primitive_create(&e->prim, pd))
		goto out;
	const char *impl = NULL;
	if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl) {
		strncpy(mm->impl, impl, sizeof mm->impl - 1);
		mm->impl[sizeof mm->impl - 1] = '\0';
	}
	if (dnnl_memory_create(&e->a, &a_md, mm->eng, DNNL_MEMORY_NONE) ||
	    dnnl_memory_create(&e->b, &b_md, mm->eng, DNNL_MEMORY_NONE) ||
	    dnnl_memory_create(&e->c, &c_md, mm->eng, DNNL_MEMORY_NONE))
		goto out;
	err = 0;
out:
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	if (po)
		dnnl_post_ops_destroy(po);
	if (attr)
		dnnl_primitive_attr_destroy(attr);
	return err;
}

static int entry_get(fci_mm *mm, mm_entry **out, size_t M, size_t N, size_t K, int ta, int tb, int acc)
{
	for (int i = 0; i < mm->n; i++) {
		mm_entry *e = &mm->cache[i];
		if (e->M == M && e->N == N && e->K == K && e->ta == ta && e->tb == tb && e->acc == acc) {
			e->last_use = ++mm->tick;
			*out = e;
			return 0;
		}
	}
	/* Evict the least recently used shape when full. */
	int slot = mm->n;
	if (mm->n == MM_CACHE) {
		slot = 0;
		for (int i = 1; i < MM_CACHE; i++)
			if (mm->cache[i].last_use < mm->cache[slot].last_use)
				slot = i;
		entry_free(&mm->cache[slot]);
	} else {
		mm->n++;
	}
	mm_entry *e = &mm->cache[slot];
	*e = (mm_entry){ .M = M, .N = N, .K = K, .ta = ta, .tb = tb, .acc = acc, .last_use = ++mm->tick };
	int err = entry_create(mm, e);
	if (err) {
		entry_free(e);
		if (slot == mm->n - 1)
			mm->n--;
		return err;
	}
	*out = e;
	return 0;
}

int fci_mm_run(fci_mm *mm, float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
	      int ta, int tb, int accumulate)
{
	if (M == 0 || N == 0)
		return 0;
	if (K == 0) {
		if (!accumulate)
			memset(C, 0, M * N * sizeof *C);
		return 0;
	}
	mm_entry *e;
	int err = entry_get(mm, &e, M, N, K, ta, !!tb, !!accumulate);
	if (err)
		return err;
	if (dnnl_memory_set_data_handle(e->a, (void *)A) || dnnl_memory_set_data_handle(e->b, (void *)B) ||
	    dnnl_memory_set_data_handle(e->c, C))
		return FC_ERR_INTERNAL;
	dnnl_exec_arg_t args[3] = { { DNNL_ARG_SRC, e->a }, { DNNL_ARG_WEIGHTS, e->b }, { DNNL_ARG_DST, e->c } };
	if (dnnl_primitive_execute(e->prim, mm->stream, 3, args) || dnnl_stream_wait(mm->stream))
		return FC_ERR_INTERNAL;
	return 0;
}
