/*
 * Entry points: the only symbols the plugin exports (see isense.map).
 * Each callback dispatches on the SPANK context to the file that owns it.
 */
#include <string.h>

#include "isense.h"

SPANK_PLUGIN(isense, 1)

struct isense_config isense_cfg;
bool isense_worker_requested;

static struct spank_option worker_option = {
	"isense-worker", NULL,
	"[isense] run as an inference worker: user data paths are masked, "
	"no new privileges (service account only)",
	0, 0, isense_client_option,
};

/*
 * Register the option first, in every context, so that sbatch --help shows it
 * and slurmstepd can match the option the job carries even when the plugstack
 * arguments are bad.
 *
 * Bad arguments: sbatch/salloc/srun and slurmd refuse to load the plugin
 * (return -1). slurmstepd and the prolog/epilog runner must not fail there:
 * that would fail, and drain nodes for, every job. They load, remember that the
 * configuration is invalid, and fail only --isense-worker tasks (fail closed).
 */
int slurm_spank_init(spank_t sp, int ac, char **av)
{
	spank_context_t ctx = spank_context();
	bool on_node = (ctx == S_CTX_REMOTE || ctx == S_CTX_SLURMD);
	spank_err_t err;

	err = spank_option_register(sp, &worker_option);
	if (err != ESPANK_SUCCESS) {
		slurm_error("isense: cannot register --isense-worker: %s",
			    spank_strerror(err));
		return (ctx == S_CTX_REMOTE || ctx == S_CTX_JOB_SCRIPT) ? 0 : -1;
	}

	/* Paths are checked only where masking happens: a login node need not
	 * have /scratch for sbatch to work. */
	if (isense_args_parse(&isense_cfg, ac, av, on_node) < 0) {
		if (ctx == S_CTX_REMOTE || ctx == S_CTX_JOB_SCRIPT)
			return 0;
		return -1;
	}
	return 0;
}

int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	(void) ac;
	(void) av;
	switch (spank_context()) {
	case S_CTX_LOCAL:
	case S_CTX_ALLOCATOR:
		return isense_client_post_opt(sp);
	default:
		return 0;
	}
}

int slurm_spank_task_init_privileged(spank_t sp, int ac, char **av)
{
	(void) ac;
	(void) av;
	if (spank_context() != S_CTX_REMOTE)
		return 0;
	return isense_stepd_task_privileged(sp);
}
