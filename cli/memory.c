/*
 * memory.c - the memory limit of a run and its units (memory.h).
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/memory.h"

uint64_t cli_mem_available(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	unsigned long long kb = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	fclose(f);
	return (uint64_t)kb * 1024;
}

int cli_parse_size(const char *cmd, const char *opt, const char *val, uint64_t *out)
{
	char *end;
	errno = 0;
	double v = isdigit((unsigned char)val[0]) || val[0] == '.' ? strtod(val, &end) : -1;
	if (v < 0 || errno == ERANGE || !isfinite(v))
		return cli_usage_error(cmd, "bad value '%s' for %s: expected a size such as 4G, 512M or 1048576",
				      val, opt);
	double mul = 1;
	switch (toupper((unsigned char)*end)) {
	case 'K': mul = 1024.0; end++; break;
	case 'M': mul = 1024.0 * 1024; end++; break;
	case 'G': mul = 1024.0 * 1024 * 1024; end++; break;
	case 'T': mul = 1024.0 * 1024 * 1024 * 1024; end++; break;
	}
	if (mul > 1 && (*end == 'i' || *end == 'I'))
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	v *= mul;
	if (*end != '\0' || !(v >= 1) || v >= 18446744073709551615.0)
		return cli_usage_error(cmd, "bad value '%s' for %s: expected a size such as 4G, 512M or 1048576",
				      val, opt);
	*out = (uint64_t)v;
	return 0;
}

const char *cli_size_text(char *buf, size_t cap, uint64_t bytes)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	double v = (double)bytes;
	int u = 0;
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, cap, "%llu B", (unsigned long long)bytes);
	else
		snprintf(buf, cap, v < 10 ? "%.1f %s" : "%.0f %s", v, unit[u]);
	return buf;
}

uint64_t cli_mem_limit(const cli_mem_opts *o)
{
	if (o->max_memory)
		return o->max_memory;
	uint64_t avail = cli_mem_available();
	return avail ? avail / CLI_MEM_SHARE_DEN * CLI_MEM_SHARE_NUM : UINT64_MAX;
}
